"""The optimizer: weight decay on weight matrices only (not biases, not norms), as GPT-NeoX.

adam (adamw, cpu_torch_adam): torch's AdamW, decoupled weight decay, torch's fused kernel when the
parameters are on a GPU; sgd: torch's SGD with momentum; lion: `neox_train.lion.Lion`;
cpu_adam: DeepSpeed's CPU Adam, for ZeRO with the optimizer offloaded to the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neox_model import NORM_TYPES
from neox_train.lion import Lion
from neox_train.run_config import OptimizerConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups, as GPT-NeoX: decayed weight matrices, and undecayed biases and norm weights."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            skip = name == "bias" or isinstance(module, NORM_TYPES)
            (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    spec, groups = config.optimizer, parameter_groups(model, config.weight_decay)
    params = spec.params
    match spec.kind:
        case "adam":
            on_gpu = all(p.is_cuda for g in groups for p in g["params"])
            return torch.optim.AdamW(
                groups, lr=params.lr, betas=params.betas, eps=params.eps, fused=on_gpu or None
            )
        case "sgd":
            return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum)
        case "lion":
            return Lion(groups, lr=params.lr, betas=params.betas)
        case "cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=params.lr, betas=params.betas, eps=params.eps)
    raise AssertionError(f"unknown optimizer {spec.type}")
