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
        self.dim, self.base = dim, base
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim))

    def reset_buffers(self) -> None:
        """Recompute the frequencies (after `to_empty` from the meta device)."""
        self.inv_freq.copy_(self._inv_freq())

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (seq,) -> (seq, dim) embeddings."""
        angles = torch.outer(positions.float(), self.inv_freq)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)
