"""The optimizer: weight decay on weight matrices only (not biases, not norms), as GPT-NeoX.

adam (adamw, cpu_torch_adam): torch's AdamW, decoupled weight decay, torch's fused kernel (on GPU
and CPU alike; `benchmarks/bench_train.py` compares it with the plain loop); with use_bnb_optimizer
bitsandbytes' Adam8bit (decoupled weight decay too; its moments 8-bit, blockwise quantised, for
tensors of at least 4096 elements, as GPT-NeoX: extra `neox-train[bnb]`); sgd: torch's SGD with
momentum; lion: `neox_train.engine.lion.Lion`;
cpu_adam: DeepSpeed's CPU Adam, for ZeRO with the optimizer offloaded to the CPU.

`GradientGuard` stands in front of the optimizer of an fp32 run without ZeRO, where DeepSpeed
neither skips non-finite steps nor reports the gradient norm (and its clipping of pipeline
stages leaves out the replicated parameters of every stage but the first).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neox_model import NORM_TYPES
from neox_train.config.schema import ConfigError
from neox_train.config.sections import OptimizerConfig, OptimizerParams
from neox_train.engine.lion import Lion


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


_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    spec, groups = config.optimizer, parameter_groups(model, config.weight_decay)
    params = spec.params
    match spec.kind:
        case "adam" if config.use_bnb_optimizer:
            return _adam8bit(groups, params)
        case "adam":
            fused = all(p.dtype in _FUSED_DTYPES for g in groups for p in g["params"])
            return torch.optim.AdamW(
                groups, lr=params.lr, betas=params.betas, eps=params.eps, fused=fused or None
            )
        case "sgd":
            return torch.optim.SGD(groups, lr=params.lr, momentum=params.momentum)
        case "lion":
            return Lion(groups, lr=params.lr, betas=params.betas)
        case "cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=params.lr, betas=params.betas, eps=params.eps)
    raise AssertionError(f"unknown optimizer {spec.type}")


def _adam8bit(groups: list[dict[str, Any]], params: OptimizerParams) -> torch.optim.Optimizer:
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ConfigError(
            "use_bnb_optimizer needs bitsandbytes: pip install 'neox-train[bnb]'"
        ) from err
    optimizer: torch.optim.Optimizer = bnb.optim.Adam8bit(
        groups, lr=params.lr, betas=params.betas, eps=params.eps
    )
    return optimizer


class GradientGuard(torch.optim.Optimizer):
    """`optimizer` behind a check of the whole model's gradient before each step: its norm (each
    tensor-parallel shard once, a replicated parameter once, a tied weight once, summed over
    `group`: the tensor and pipeline ranks of one replica), clipping to `clip` (0: none) as ZeRO
    clips, and a skipped step when the norm is not finite. DeepSpeed's engine reads `overflow` (a
    skipped step is counted and leaves the LR schedule where it was) and `_global_grad_norm`.

    The wrapped optimizer keeps the parameters, state and hooks; its state dict is this one's.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, clip: float, group: Any, tp_rank: int
    ) -> None:  # no Optimizer.__init__: nothing of its own to set up
        self.optimizer, self.clip, self.group, self.tp_rank = optimizer, clip, group, tp_rank
        self.overflow = False
        self._global_grad_norm: float | None = None

    # the wrapped optimizer's own, read and written through (its load_state_dict rebinds them)
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def __repr__(self) -> str:
        return f"GradientGuard({self.optimizer!r}, clip={self.clip})"

    @torch.no_grad()
    def grad_norm(self) -> float:
        """The global L2 norm of the gradients, as one replica of the whole model holds them."""
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        # a tied layer's copy on a later pipeline stage (DeepSpeed marks it ds_pipe_replicated)
        # holds the same summed gradient as the first stage's: counted there
        counted = [
            p.grad
            for p in params
            if (self.tp_rank == 0 or getattr(p, "model_parallel", False))
            and not getattr(p, "ds_pipe_replicated", False)
        ]
        device = params[0].device if params else torch.device("cpu")
        total = torch.zeros((), dtype=torch.float32, device=device)
        if counted:
            total = torch.stack(torch._foreach_norm(counted)).float().pow(2).sum()
        if dist.is_initialized() and dist.get_world_size(self.group) > 1:
            dist.all_reduce(total, group=self.group)
        return float(total.sqrt())

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        norm = self.grad_norm()
        self._global_grad_norm = norm
        self.overflow = not math.isfinite(norm)
        if self.overflow:
            return None
        if self.clip > 0 and norm + 1e-6 > self.clip:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch._foreach_mul_(grads, self.clip / (norm + 1e-6))
        return self.optimizer.step(closure)
