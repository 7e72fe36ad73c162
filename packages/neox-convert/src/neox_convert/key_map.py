"""Renaming a state dict between neox's `Transformer` names and another format's, both ways.

A `KeyMap` is written out literally in each format's module: which neox tensor is which of theirs,
outside the blocks and inside block i. Where neox fuses tensors that the other format keeps
apart (attention's QKV, a gated MLP's [up | gate]) the map lists the parts in fused order and
the tensors are split or fused on the way (see `fused`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from neox_convert.errors import ConversionError, ExportError
from neox_convert.fused import fuse_qkv, fuse_up_gate, split_qkv, split_up_gate
from neox_model import ModelConfig

StateDict = dict[str, torch.Tensor]

# neox buffers that are recomputed from the config and never converted
DERIVED = ("rotary.inv_freq",)


@dataclass(frozen=True)
class KeyMap:
    format: str  # the other format's name, for messages
    top: dict[str, str]  # neox name -> theirs, outside the blocks
    layer: dict[str, str]  # neox name -> theirs, inside a block (without the block prefix)
    layer_prefix: str  # their prefix of block i, with "{}" for i
    qkv: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # fused -> q, k, v
    up_gate: dict[str, tuple[str, str]] = field(default_factory=dict)  # fused -> up, gate
    derived: tuple[str, ...] = ()  # suffixes of their buffers that are recomputed, skipped
    aliases: dict[str, str] = field(default_factory=dict)  # other spellings of their top names


def block_name(name: str) -> tuple[int, str] | None:
    """`layers.3.mlp.x` -> (3, `mlp.x`); None for a name outside the blocks."""
    prefix, _, rest = name.partition(".")
    index, _, key = rest.partition(".")
    if prefix != "layers" or not index.isdigit():
        return None
    return int(index), key


def to_format(state: StateDict, config: ModelConfig | None, keys: KeyMap) -> StateDict:
    """neox names -> theirs, splitting fused tensors; a tensor without a counterpart is refused.
    `config` may be None for a map without fused tensors (a pure rename)."""
    out: StateDict = {}
    for name, tensor in state.items():
        if name in DERIVED:
            continue
        if name in keys.top:
            out[keys.top[name]] = tensor
            continue
        block = block_name(name)
        if block is None:
            raise ExportError(f"no {keys.format} name for tensor {name!r}")
        prefix, key = keys.layer_prefix.format(block[0]), block[1]
        if key in keys.layer:
            out[prefix + keys.layer[key]] = tensor
        elif key in keys.qkv:
            assert config is not None, "splitting QKV needs the config"
            out.update(
                zip([prefix + k for k in keys.qkv[key]], split_qkv(tensor, config), strict=True)
            )
        elif key in keys.up_gate:
            out.update(
                zip([prefix + k for k in keys.up_gate[key]], split_up_gate(tensor), strict=True)
            )
        else:
            raise ExportError(f"no {keys.format} name for tensor {name!r}")
    return out


def _take(state: StateDict, names: list[str]) -> list[torch.Tensor] | None:
    """Pop all of `names` from `state`; None when none is there; an error when only some are."""
    present = [n for n in names if n in state]
    if not present:
        return None
    if len(present) != len(names):
        missing = sorted(set(names) - set(present))
        raise ConversionError(f"the weights have {present[0]} but not {', '.join(missing)}")
    return [state.pop(n) for n in names]


def _fused(
    fuse: Callable[..., torch.Tensor],
    parts: list[torch.Tensor],
    config: ModelConfig | None,
    first: str,
) -> torch.Tensor:
    """`fuse(*parts[, config])`, its shape errors reported as the weights disagreeing with the
    config about `first` and the tensors that go with it."""
    try:
        return fuse(*parts, config) if config is not None else fuse(*parts)
    except ValueError as err:
        raise ConversionError(f"{first} and its companions do not fit the config: {err}") from err


def from_format(theirs: StateDict, config: ModelConfig, keys: KeyMap) -> StateDict:
    """Their names -> neox's, fusing split tensors. Tensors they have and neox does not (other
    than recomputed buffers) are refused; tensors neox needs and they lack are left for the
    caller to find (it knows which the config needs)."""
    remaining = {keys.aliases.get(name, name): t for name, t in theirs.items()}
    out: StateDict = {}
    for name, their_name in keys.top.items():
        if their_name in remaining:
            out[name] = remaining.pop(their_name)
    for i in range(config.num_layers):
        prefix = keys.layer_prefix.format(i)
        for name, their_name in keys.layer.items():
            if prefix + their_name in remaining:
                out[f"layers.{i}.{name}"] = remaining.pop(prefix + their_name)
        for name, parts in keys.qkv.items():
            qkv = _take(remaining, [prefix + p for p in parts])
            if qkv is not None:
                out[f"layers.{i}.{name}"] = _fused(fuse_qkv, qkv, config, prefix + parts[0])
        for name, pair in keys.up_gate.items():
            up_gate = _take(remaining, [prefix + p for p in pair])
            if up_gate is not None:
                out[f"layers.{i}.{name}"] = _fused(fuse_up_gate, up_gate, None, prefix + pair[0])
    unknown = sorted(n for n in remaining if not n.endswith(keys.derived))
    if unknown:
        shown = ", ".join(unknown[:4]) + (
            f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        )
        raise ConversionError(
            f"{len(unknown)} tensor(s) have no place in a {config.num_layers}-layer neox model "
            f"read as {keys.format}: {shown}"
        )
    return out
