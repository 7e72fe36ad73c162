"""Lion: EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization
Algorithms").

    update = sign(beta1 * m + (1 - beta1) * g)
    p     <- p - lr * (update + weight_decay * p)
    m     <- beta2 * m + (1 - beta2) * g
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from neox_train.config.schema import ConfigError


class Lion(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"Lion needs lr > 0 and betas in [0, 1), got {lr} and {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                momentum = self.state[param].setdefault("exp_avg", torch.zeros_like(param))
                update = (momentum * beta1 + param.grad * (1 - beta1)).sign_()
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update, alpha=-group["lr"])
                momentum.mul_(beta2).add_(param.grad, alpha=1 - beta2)
        return loss
