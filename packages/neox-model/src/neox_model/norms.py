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


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last dimension, in float32, then times weight."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype) * weight


class RMSNorm(nn.Module):
    """With `fused` (rmsnorm_fusion), the CUDA kernel where it runs (csrc/kernels/rms_norm.cu)."""

    def __init__(self, dim: int, eps: float, bias: bool, fused: bool = False) -> None:
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and kernels.takes(x, self.weight) and self.weight.dtype == x.dtype:
            y = kernels.rms_norm_fused(x, self.weight, self.eps)
        else:
            y = rms_norm_reference(x, self.weight, self.eps)
        return y + self.bias if self.bias is not None else y

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


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


def build_norm(config: ModelConfig) -> nn.Module:
    match config.norm:
        case "layernorm":
            return nn.LayerNorm(
                config.hidden_size, eps=config.layernorm_epsilon, bias=config.use_bias_in_norms
            )
        case "rmsnorm":
            return RMSNorm(
                config.hidden_size,
                config.rms_norm_epsilon,
                config.use_bias_in_norms,
                fused=config.rmsnorm_fusion,
            )
        case "scalenorm":
            return ScaleNorm(config.scalenorm_epsilon)


NORM_TYPES = (nn.LayerNorm, RMSNorm, ScaleNorm)
