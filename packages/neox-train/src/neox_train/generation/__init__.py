"""Text generation: sampling, GPT-NeoX's generation modes, the `generate` command."""
