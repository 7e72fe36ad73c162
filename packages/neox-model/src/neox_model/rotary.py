"""Rotary position embedding (Su et al., 2021, "RoFormer"), GPT-NeoX flavour.

Only the first `rotary_dim` dimensions of each head rotate (GPT-NeoX's `rotary_pct`); pairs are
(i, i + rotary_dim / 2), the "rotate half" layout that GPT-NeoX and Hugging Face GPTNeoX use.

`rope_scaling` changes the frequencies for contexts longer than the trained one, with the
formulas (and the float32 arithmetic) of Hugging Face's `rope_parameters`:

- linear: every frequency / factor (position interpolation, Chen et al., 2023).
- llama3: wavelengths longer than original / low_freq_factor are divided by factor, shorter than
  original / high_freq_factor kept, and the band between blended linearly in original / wavelength.
- yarn (Peng et al., 2023): a per-dimension ramp between interpolated and original frequencies,
  bounded by beta_fast / beta_slow rotations over the original context; cos and sin are
  multiplied by attention_factor.
- dynamic (NTK-aware): for a call whose last position L exceeds original, the base becomes
  base * (factor * L / original - (factor - 1)) ^ (d / (d - 2)), from the positions of that call
  (Hugging Face's module also keeps a longer base until a call is shorter than original).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neox_model import kernels
from neox_model.config import RopeScaling


def base_frequencies(rotary_dim: int, base: float) -> torch.Tensor:
    """1 / base^(2i / rotary_dim) for i < rotary_dim / 2, in float32."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
    return 1.0 / (base**exponents)


def scaled_frequencies(
    rotary_dim: int, base: float, scaling: RopeScaling | None
) -> tuple[torch.Tensor, float]:
    """The inverse frequencies under `scaling` (dynamic: those of the original context) and the
    factor cos and sin are multiplied by."""
    inv_freq = base_frequencies(rotary_dim, base)
    if scaling is None or scaling.rope_type == "dynamic":
        return inv_freq, 1.0
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor, 1.0
    assert scaling.original_max_position_embeddings is not None  # checked by RopeScaling
    if scaling.rope_type == "llama3":
        return _llama3(inv_freq, scaling, scaling.original_max_position_embeddings), 1.0
    return _yarn(rotary_dim, base, scaling, scaling.original_max_position_embeddings)


def _llama3(inv_freq: torch.Tensor, scaling: RopeScaling, original: int) -> torch.Tensor:
    factor, low, high = scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor
    wavelength = 2 * math.pi / inv_freq
    long_kept = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * long_kept / factor + smooth * long_kept
    between = ~(wavelength < original / high) * ~(wavelength > original / low)
    return torch.where(between, blended, long_kept)


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(
    rotary_dim: int, base: float, scaling: RopeScaling, original: int
) -> tuple[torch.Tensor, float]:
    factor = scaling.factor
    attention_factor = scaling.attention_factor
    if attention_factor is None:
        if scaling.mscale and scaling.mscale_all_dim:
            attention_factor = _mscale(factor, scaling.mscale) / _mscale(
                factor, scaling.mscale_all_dim
            )
        else:
            attention_factor = _mscale(factor)

    def correction_dim(rotations: float) -> float:  # the dimension turning `rotations` times
        return rotary_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(scaling.beta_fast), correction_dim(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # a ramp of zero width would divide by zero
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    powers = base ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    extrapolated = 1 - ramp  # the weight of the unscaled frequency
    inv_freq = (1.0 / (factor * powers)) * (1 - extrapolated) + (1.0 / powers) * extrapolated
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor

    def __init__(
        self,
        rotary_dim: int,
        base: float,
        save_in_state_dict: bool = False,
        max_positions: int | None = None,
        scaling: RopeScaling | None = None,
    ) -> None:
        """With `max_positions`, cos and sin of every position are computed once, on first use
        (and again on another device or after `reset_buffers`), and looked up after that."""
        super().__init__()
        self.rotary_dim, self.base, self.max_positions = rotary_dim, base, max_positions
        self.scaling = scaling
        inv_freq, self.attention_factor = scaled_frequencies(rotary_dim, base, scaling)
        # derived from the config; in the state dict only when rotary_save_freqs_buffer asks
        self.register_buffer("inv_freq", inv_freq, persistent=save_in_state_dict)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None  # float32, never saved
        self._table_key: tuple[torch.device, torch.dtype] | None = None

    def _inv_freq(self) -> torch.Tensor:
        return scaled_frequencies(self.rotary_dim, self.base, self.scaling)[0]

    def reset_buffers(self) -> None:
        """Recompute the frequencies (after `to_empty` from the meta device)."""
        self.inv_freq.copy_(self._inv_freq())
        self._table = None

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (seq,) -> cos, sin each (seq, rotary_dim), in float32."""
        scaling = self.scaling
        if scaling is not None and scaling.rope_type == "dynamic":
            assert scaling.original_max_position_embeddings is not None
            length = positions.max() + 1
            if length > scaling.original_max_position_embeddings:
                return self._angles(positions, self._dynamic_frequencies(length, scaling))
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
        return self._angles(positions, self.inv_freq)

    def _angles(
        self, positions: torch.Tensor, inv_freq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.outer(positions.float(), inv_freq.float())  # (seq, rotary_dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (seq, rotary_dim)
        if self.attention_factor == 1.0:
            return angles.cos(), angles.sin()
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor

    def _dynamic_frequencies(self, length: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
        """NTK-aware frequencies for a call reaching position `length` - 1 (a 0-d tensor, as
        Hugging Face computes it: in float32)."""
        original, factor = scaling.original_max_position_embeddings, scaling.factor
        dim = self.rotary_dim
        assert original is not None
        base = self.base * ((factor * length / original) - (factor - 1)) ** (dim / (dim - 2))
        exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=length.device).float() / dim
        return 1.0 / (base**exponents)


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
