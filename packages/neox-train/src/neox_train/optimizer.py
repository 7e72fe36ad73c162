"""The optimizer: AdamW with weight decay on weight matrices only (not biases, not norms)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neox_train.run_config import OptimizerConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups, as GPT-NeoX: decayed weight matrices, and undecayed biases and norm weights."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            skip = name == "bias" or isinstance(module, nn.LayerNorm)
            (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    params = config.optimizer.params
    # "Adam" in GPT-NeoX configs runs a fused Adam with decoupled weight decay: AdamW.
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=params.lr,
        betas=params.betas,
        eps=params.eps,
    )
