"""Rotary position embedding (Su et al., 2021, "RoFormer"), GPT-NeoX flavour.

Only the first `rotary_dim` dimensions of each head rotate (GPT-NeoX's `rotary_pct`); pairs are
(i, i + rotary_dim / 2), the "rotate half" layout that GPT-NeoX and Hugging Face GPTNeoX use.
"""

from __future__ import annotations

import torch
from torch import nn

from neox_model import kernels


class RotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(
        self,
        rotary_dim: int,
        base: float,
        save_in_state_dict: bool = False,
        max_positions: int | None = None,
    ) -> None:
        """With `max_positions`, cos and sin of every position are computed once, on first use
        (and again on another device or after `reset_buffers`), and looked up after that."""
        super().__init__()
        self.rotary_dim, self.base, self.max_positions = rotary_dim, base, max_positions
        # derived from the config; in the state dict only when rotary_save_freqs_buffer asks
        self.register_buffer("inv_freq", self._inv_freq(), persistent=save_in_state_dict)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # float32, never saved
        self._table_key: tuple[torch.device, torch.dtype] | None = None

    def _inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64).float() / self.rotary_dim
        return 1.0 / (self.base**exponents)

    def reset_buffers(self) -> None:
        """Recompute the frequencies (after `to_empty` from the meta device)."""
        self.inv_freq.copy_(self._inv_freq())
        self._table = None

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (seq,) -> cos, sin each (seq, rotary_dim), in float32."""
        if self.max_positions is None:
            return self.angles(positions)
        key = (self.inv_freq.device, self.inv_freq.dtype)  # angles() follows both
        if self._table is None or self._table_key != key:
            every = torch.arange(self.max_positions, device=self.inv_freq.device)
            self._table, self._table_key = self.angles(every), key  # (max_positions, rot) each
        cos, sin = self._table
        return cos[positions], sin[positions]

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of positions (seq,) computed afresh, each (seq, rotary_dim), in float32."""
        freqs = torch.outer(positions.float(), self.inv_freq.float())  # (seq, rotary_dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (seq, rotary_dim)
        return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (batch, heads, seq, head_dim); rotates x[..., :rotary_dim] and keeps the rest."""
    rotary_dim = cos.shape[-1]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    rotated = rot * cos.to(x.dtype) + _rotate_half(rot) * sin.to(x.dtype)
    return torch.cat((rotated, rest), dim=-1)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused: bool = False
) -> torch.Tensor:
    """`apply_rotary_reference`, or with `fused` its CUDA kernel where it runs (rope_fusion)."""
    if fused and kernels.takes(x, cos, sin):
        return kernels.apply_rotary_fused(x, cos, sin)
    return apply_rotary_reference(x, cos, sin)
