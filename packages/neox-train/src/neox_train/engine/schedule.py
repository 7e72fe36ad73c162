"""Learning-rate schedule: linear warmup, then constant, linear or cosine decay (as GPT-NeoX).

`learning_rate(step, ...)` is the rate for optimizer step `step` (1-based). Warmup lasts
`int(warmup * decay_iters)` steps; decay runs from the end of warmup to `decay_iters` and the
rate never goes below `min_lr`. GPT-NeoX's linear decay reaches 0 at decay_iters and is then
clamped to min_lr; cosine decays from lr to min_lr; inverse_sqrt falls as
lr * sqrt(warmup / step) after warmup (Vaswani et al., 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Schedule:
    lr: float
    min_lr: float
    warmup_iters: int
    decay_iters: int
    style: Literal["constant", "linear", "cosine", "inverse_sqrt"]

    def learning_rate(self, step: int) -> float:
        if self.warmup_iters and step <= self.warmup_iters:
            return self.lr * step / self.warmup_iters
        span = max(1, self.decay_iters - self.warmup_iters)
        progress = min(1.0, max(0.0, (step - self.warmup_iters) / span))
        match self.style:
            case "constant":
                rate = self.lr
            case "linear":
                rate = self.lr * (1.0 - progress)
            case "cosine":
                rate = self.min_lr + (self.lr - self.min_lr) * 0.5 * (
                    1 + math.cos(math.pi * progress)
                )
            case "inverse_sqrt":
                rate = self.lr * math.sqrt(max(self.warmup_iters, 1) / step)
        return max(rate, self.min_lr)

    def factor(self, completed_steps: int) -> float:
        """Multiplier of `lr` for the next step, for torch's LambdaLR (0-based counter)."""
        return self.learning_rate(completed_steps + 1) / self.lr
