"""neox: train GPT-NeoX-family language models; the `neox` command."""

__version__ = "0.1.0"
