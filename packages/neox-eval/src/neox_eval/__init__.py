"""neox-eval: lm-evaluation-harness adapter for neox models (the adapter is not written yet)."""

__version__ = "0.1.0"
