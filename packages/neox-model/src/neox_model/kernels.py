"""Fused GPU kernels: RMSNorm and rotary embeddings in CUDA, each the fused form of a PyTorch
reference with the same signature (`norms.rms_norm_reference`, `rotary.apply_rotary_reference`).

The sources are the repository's `csrc/kernels` (shipped in the wheel as `neox_model/csrc`).
They are compiled on first use with `torch.utils.cpp_extension.load`, which needs `nvcc` and the
CUDA headers of the CUDA version torch was built with (`CUDA_HOME`), and caches the build in
`TORCH_EXTENSIONS_DIR` (default `~/.cache/torch_extensions`); concurrent ranks wait for one
build. `ModelConfig.rmsnorm_fusion` and `rope_fusion` choose them; on CPU tensors, and for dtypes
or shapes they do not take, the references run, so a fused model is the same model everywhere.

The kernels are registered as torch custom ops (`neox::rms_norm`, `neox::rotary` and their
backwards) with autograd and shape functions, so that `torch.compile` traces through them.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from neox_model.config import ModelConfig

log = logging.getLogger(__name__)

SOURCES = ("neox_kernels.cpp", "rms_norm.cu", "rotary.cu")
KERNEL_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})


class KernelBuildError(RuntimeError):
    """The fused kernels could not be compiled where the model runs."""


def source_dir() -> Path:
    """The directory holding the kernels' CUDA/C++ sources."""
    return Path(str(resources.files("neox_model") / "csrc"))


@functools.cache
def extension() -> Any:
    """The compiled kernels (a Python extension module), built on first use."""
    from torch.utils import cpp_extension

    sources = [str(source_dir() / name) for name in SOURCES]
    log.info("building neox's fused kernels from %s (first use only; about a minute)", sources)
    try:
        return cpp_extension.load(
            name="neox_kernels",
            sources=sources,
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
        )
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        raise KernelBuildError(
            f"building neox's fused kernels failed ({error}). They need nvcc and the CUDA "
            "headers of the CUDA version torch was built with (set CUDA_HOME). Set "
            "rmsnorm_fusion and rope_fusion to false to run the PyTorch references instead."
        ) from error


def build_kernels(config: ModelConfig, device: torch.device) -> bool:
    """Compiles the kernels now if `config` asks for one that runs on `device`, so that a missing
    compiler is reported before training starts; whether it did."""
    wanted = (config.rope_fusion and config.pos_emb == "rotary") or (
        config.rmsnorm_fusion and config.norm == "rmsnorm"
    )
    if not wanted or device.type != "cuda":
        return False
    extension()
    return True


def takes(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether the fused kernels run for input x (and the other tensors of the call): all on a
    GPU, x in float32, float16 or bfloat16."""
    return x.is_cuda and x.dtype in KERNEL_DTYPES and all(t.is_cuda for t in others)


def rms_norm_fused(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension in one kernel; x and weight of the same dtype."""
    y, _ = _rms_norm(x, weight, eps)
    return y


def apply_rotary_fused(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (batch, heads, seq, head_dim) rotated by cos, sin (seq, rotary_dim) in float32."""
    return _rotary(x, cos.float(), sin.float())


# The custom ops. Defining them builds nothing: the extension is compiled when one first runs.


@torch.library.custom_op("neox::rms_norm", mutates_args=())
def _rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(extension().rms_norm_forward(x, weight, eps))


@_rms_norm.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    return y, x.new_empty((rows,), dtype=torch.float32)


@torch.library.custom_op("neox::rms_norm_backward", mutates_args=())
def _rms_norm_backward(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(extension().rms_norm_backward(dy, x, weight, rstd))


@_rms_norm_backward.register_fake
def _(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _rms_norm_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_grad(ctx: Any, dy: torch.Tensor, _: torch.Tensor) -> tuple[Any, ...]:
    x, weight, rstd = ctx.saved_tensors
    dx, dweight = _rms_norm_backward(dy, x, weight, rstd)
    return dx, dweight, None


_rms_norm.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


@torch.library.custom_op("neox::rotary", mutates_args=())
def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return extension().rotary_forward(x, cos, sin)


@torch.library.custom_op("neox::rotary_backward", mutates_args=())
def _rotary_backward(grad: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return extension().rotary_backward(grad, cos, sin)


def _rotary_fake(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _rotary_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[1], inputs[2])


def _rotary_grad(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    cos, sin = ctx.saved_tensors
    return _rotary_backward(grad, cos, sin), None, None


_rotary.register_fake(_rotary_fake)
_rotary_backward.register_fake(_rotary_fake)
_rotary.register_autograd(_rotary_grad, setup_context=_rotary_setup)
