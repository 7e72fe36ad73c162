"""`--precision`: the dtype converted weights are written in ("auto" keeps the source's)."""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: Precision, state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype to write: the one asked for, or with "auto" the source's floating dtype."""
    if precision != "auto":
        return DTYPES[precision]
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    return floating[0] if floating else torch.float32


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every floating tensor of `state` in `dtype`, contiguous and owning its memory."""
    return {
        name: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).contiguous().clone()
        for name, t in state.items()
    }
