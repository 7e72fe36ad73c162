"""Normalisation layers: LayerNorm (Ba et al., 2016), RMSNorm (Zhang & Sennrich, 2019) and
ScaleNorm (Nguyen & Salazar, 2019), with GPT-NeoX's `norm` names and optional bias.

RMSNorm computes x * rsqrt(mean(x^2) + eps) * weight, as LLaMA and Hugging Face do (GPT-NeoX
adds eps to the root instead; the two differ by O(eps)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox_model import kernels
from neox_model.config import ModelConfig
from neox_model.tensor_parallel import TPGroup, all_reduce_both_ways


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last dimension, in float32, then times weight."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype) * weight


class RMSNorm(nn.Module):
    """With `fused` (rmsnorm_fusion), the CUDA kernel where it runs (csrc/kernels/rms_norm.cu)."""

    def __init__(
        self,
        dim: int,
        eps: float,
        bias: bool,
        fused: bool = False,
        unit_offset: bool = False,
        fp32_weight: bool = False,
    ) -> None:
        """`unit_offset`: scale by 1 + weight (Gemma), in float32, the weight starting at 0.
        `fp32_weight`: scale by the weight in float32, then round (OLMo 2); else round the
        normalised input to its type, then scale (Llama)."""
        super().__init__()
        self.eps, self.fused, self.unit_offset = eps, fused, unit_offset
        self.fp32_weight = fp32_weight
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unit_offset:
            normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
            y = (normed * (1.0 + self.weight.float())).to(x.dtype)
        elif self.fp32_weight:
            normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
            y = (normed * self.weight.float()).to(x.dtype)
        elif self.fused and kernels.takes(x, self.weight) and self.weight.dtype == x.dtype:
            y = kernels.rms_norm_fused(x, self.weight, self.eps)
        else:
            y = rms_norm_reference(x, self.weight, self.eps)
        return y + self.bias if self.bias is not None else y

    def reset_parameters(self) -> None:
        (nn.init.zeros_ if self.unit_offset else nn.init.ones_)(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ShardedRMSNorm(nn.Module):
    """RMSNorm over features split across tensor-parallel ranks: this rank holds `width / tp`
    of them and that part of the weight; the mean square sums every rank's part (OLMo 2's query
    and key norms over all heads, whose heads the ranks share out)."""

    sharded_features = True  # `shard_spec`: the weight is split along dim 0 like the features

    def __init__(self, width: int, eps: float, tp: TPGroup) -> None:
        super().__init__()
        self.eps, self.tp, self.width = eps, tp, width
        self.weight = nn.Parameter(torch.ones(tp.divide(width, "the norm's width")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        mean = all_reduce_both_ways(wide.pow(2).sum(-1, keepdim=True), self.tp) / self.width
        # the weight multiplies in float32 before rounding, as OLMo 2's norm does
        return (wide * torch.rsqrt(mean + self.eps) * self.weight.float()).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class ScaleNorm(nn.Module):
    """x / max(||x||, eps) * g, with one learned scalar g."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp(min=self.eps) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def build_norm(config: ModelConfig, width: int | None = None) -> nn.Module:
    """The config's norm over `width` features (default hidden_size; a head's width for
    `use_qk_layernorm`)."""
    width = width or config.hidden_size
    match config.norm:
        case "layernorm":
            return nn.LayerNorm(width, eps=config.layernorm_epsilon, bias=config.use_bias_in_norms)
        case "rmsnorm":
            return RMSNorm(
                width,
                config.rms_norm_epsilon,
                config.use_bias_in_norms,
                fused=config.rmsnorm_fusion,
                unit_offset=config.rmsnorm_unit_offset,
                fp32_weight=config.rmsnorm_fp32_weight,
            )
        case "scalenorm":
            return ScaleNorm(config.scalenorm_epsilon)


NORM_TYPES = (nn.LayerNorm, RMSNorm, ShardedRMSNorm, ScaleNorm)
