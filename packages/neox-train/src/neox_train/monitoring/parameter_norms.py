"""Parameter norms for monitoring: the whole model's and each block's, over every shard.

Each parameter is counted once: a tensor-parallel shard by every rank holding one, a replicated
parameter by tensor-parallel rank 0 only; the sums are all-reduced over the ranks of one model
replica (its tensor-parallel and pipeline ranks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neox_model import ModelConfig
from neox_train.engine.deepspeed_internals import flat_groups, fragment, optimizer_kind


def model_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name in the Transformer, parameter) of a Transformer or a pipeline stage's layers."""
    layers = getattr(module, "forward_funcs", None)  # a DeepSpeed PipelineModule
    if layers is None:
        yield from module.named_parameters()
        return
    for layer in layers:
        for name, param in layer.named_parameters():
            yield layer.model_name(name), param


def norm_groups(config: ModelConfig) -> list[str]:
    return [
        "embed_in",
        *(f"layers.{i}" for i in range(config.num_layers)),
        "final_layer_norm",
        "embed_out",
        "position_embeddings",
    ]


def parameter_norms(
    module: nn.Module, config: ModelConfig, tp_rank: int, replica_group: Any
) -> dict[str, float]:
    """{"param_norm": whole model, "param_norm/layers.N": each block}."""
    groups = norm_groups(config)
    index = {name: i for i, name in enumerate(groups)}
    sums = torch.zeros(len(groups), dtype=torch.float64)
    for name, param in model_parameters(module):
        if not getattr(param, "model_parallel", False) and tp_rank != 0:
            continue  # replicated: counted by tensor-parallel rank 0
        key = ".".join(name.split(".")[:2]) if name.startswith("layers.") else name.split(".")[0]
        sums[index[key]] += param.detach().double().pow(2).sum().cpu()
    if dist.is_initialized() and dist.get_world_size(replica_group) > 1:
        dist.all_reduce(sums, group=replica_group)
    norms = {"param_norm": float(sums.sum().sqrt())}
    norms.update(
        {
            f"param_norm/{g}": float(sums[i].sqrt())
            for i, g in enumerate(groups)
            if g.startswith("layers.")
        }
    )
    return norms


def _state_pieces(engine: Any, tp_rank: int) -> Iterator[tuple[str, torch.Tensor]]:
    """(state key, this rank's part of one parameter's state tensor), each part of the model
    yielded by exactly one rank of the world once the caller sums as `optimizer_state_norms`
    does: a replicated parameter by tensor-parallel rank 0 only."""

    def counted(param: torch.Tensor) -> bool:
        return getattr(param, "model_parallel", False) or tp_rank == 0

    if optimizer_kind(engine) == "torch":
        for _, param in model_parameters(engine.module):
            for key, value in engine.optimizer.state.get(param, {}).items():
                if counted(param) and torch.is_tensor(value) and value.dim() > 0:
                    yield key, value
        return
    # ZeRO 1/2, bf16 optimizer: this data-parallel rank's slice of each group's parameters, in
    # its flat partition (DeepSpeed's own per-parameter views of the state are linked only for
    # the groups stepped before the first link, so they are not used)
    base = engine.optimizer.optimizer
    for group, flat in flat_groups(engine):
        state = base.state.get(flat, {})
        for member in group:
            place = fragment(member)
            if place is None or not counted(member):
                continue
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == flat.shape:
                    yield key, value.narrow(0, *place)


def optimizer_state_norms(engine: Any, tp_rank: int, replica_group: Any) -> dict[str, float]:
    """{"optimizer_state_norm/KEY": norm over the whole model} for each tensor the optimizer
    keeps per parameter (Adam: exp_avg, exp_avg_sq). Without ZeRO every data-parallel replica
    holds the whole state and the sums run over one replica's ranks; with ZeRO each holds a
    slice and they run over the world."""
    kind = optimizer_kind(engine)
    if kind not in ("torch", "flat"):
        return {}
    sums: dict[str, torch.Tensor] = {}
    for key, value in _state_pieces(engine, tp_rank):
        total = sums.setdefault(key, torch.zeros((), dtype=torch.float64))
        total += value.detach().double().pow(2).sum().cpu()
    group = replica_group if kind == "torch" else None
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        # a rank may hold no state at all (no slice of any parameter): agree on the keys first
        everyone: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(everyone, sorted(sums), group=group)
        keys = sorted(set().union(*everyone))
        zero = torch.zeros((), dtype=torch.float64)
        stacked = torch.stack([sums.get(k, zero) for k in keys])
        dist.all_reduce(stacked, group=group)
        sums = dict(zip(keys, stacked, strict=True))
    return {f"optimizer_state_norm/{k}": float(v.sqrt()) for k, v in sums.items()}
