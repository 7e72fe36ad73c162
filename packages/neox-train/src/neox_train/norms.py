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
