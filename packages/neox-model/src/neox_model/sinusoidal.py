"""Fixed sinusoidal position embeddings (Vaswani et al., 2017), added to the token embeddings.

GPT-NeoX's layout: the first half of the features are sines, the second half cosines.
"""

from __future__ import annotations

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
        self.register_buffer("inv_freq", 1.0 / (base**exponents), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (seq,) -> (seq, dim) embeddings."""
        angles = torch.outer(positions.float(), self.inv_freq)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)
