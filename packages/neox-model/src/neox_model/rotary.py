"""Rotary position embedding (Su et al., 2021, "RoFormer"), GPT-NeoX flavour.

Only the first `rotary_dim` dimensions of each head rotate (GPT-NeoX's `rotary_pct`); pairs are
(i, i + rotary_dim / 2), the "rotate half" layout that GPT-NeoX and Hugging Face GPTNeoX use.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, rotary_dim: int, base: float, save_in_state_dict: bool = False) -> None:
        super().__init__()
        self.rotary_dim, self.base = rotary_dim, base
        # derived from the config; in the state dict only when rotary_save_freqs_buffer asks
        self.register_buffer("inv_freq", self._inv_freq(), persistent=save_in_state_dict)

    def _inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64).float() / self.rotary_dim
        return 1.0 / (self.base**exponents)

    def reset_buffers(self) -> None:
        """Recompute the frequencies (after `to_empty` from the meta device)."""
        self.inv_freq.copy_(self._inv_freq())

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (seq,) -> cos, sin each (seq, rotary_dim), in float32."""
        freqs = torch.outer(positions.float(), self.inv_freq.float())  # (seq, rotary_dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (seq, rotary_dim)
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (batch, heads, seq, head_dim); rotates x[..., :rotary_dim] and keeps the rest."""
    rotary_dim = cos.shape[-1]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rotated = rot * cos.to(x.dtype) + _rotate_half(rot) * sin.to(x.dtype)
    return torch.cat((rotated, rest), dim=-1)
