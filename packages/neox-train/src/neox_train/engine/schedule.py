"""Learning-rate schedule: linear warmup, then constant, linear or cosine decay (as GPT-NeoX).

`learning_rate(step, ...)` is the rate for optimizer step `step` (1-based). Warmup lasts
`int(warmup * decay_iters)` steps; decay runs from the end of warmup to `decay_iters` and the
rate never goes below `min_lr`. GPT-NeoX's linear decay reaches 0 at decay_iters and is then
clamped to min_lr; cosine decays from lr to min_lr; inverse_sqrt falls as
lr * sqrt(warmup / step) after warmup (Vaswani et al., 2017).

On resume the run follows the schedule `resumed_schedule` chooses between the config's and the
checkpoint's, as GPT-NeoX's AnnealingLR does, from the step count the checkpoint holds;
`ScheduledLR` is that schedule as the torch scheduler DeepSpeed steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neox_train.config.schema import ConfigError


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

    def describe(self) -> str:
        """'lr 0.001, min_lr 0.0001, warmup steps 3, ...', under the config's key names."""
        return ", ".join(f"{key} {getattr(self, name)}" for name, key in _SCHEDULE_KEYS.items())


# the schedule's values under the config keys that set them (warmup as a number of steps)
_SCHEDULE_KEYS = {
    "lr": "lr",
    "min_lr": "min_lr",
    "warmup_iters": "warmup steps",
    "decay_iters": "lr_decay_iters",
    "style": "lr_decay_style",
}


def resumed_schedule(
    config: Schedule,
    saved: Schedule | None,
    *,
    override: bool,
    use_checkpoint: bool,
    where: str,
    step: int,
) -> Schedule:
    """The schedule a run resumed from the checkpoint `where` (saved after `step` steps)
    follows: the config's with `override` (override_lr_scheduler), else the checkpoint's with
    `use_checkpoint` (use_checkpoint_lr_scheduler), else the two must be equal. A checkpoint
    that recorded none (saved by an earlier neox) counts as equal."""
    if saved is None or override:
        return config
    if use_checkpoint:
        return saved
    differences = [
        f"{key} {getattr(saved, name)} there, {getattr(config, name)} here"
        for name, key in _SCHEDULE_KEYS.items()
        if getattr(saved, name) != getattr(config, name)
    ]
    if differences:
        raise ConfigError(
            f"{where} was trained with another learning-rate schedule than this config's: "
            f"{'; '.join(differences)}; set `override_lr_scheduler: true` to follow this "
            f"config's schedule from step {step}, or `use_checkpoint_lr_scheduler: true` to "
            "keep the checkpoint's"
        )
    return config


class ScheduledLR(torch.optim.lr_scheduler.LRScheduler):
    """`schedule` as torch's scheduler: the rate of the next step, last_epoch + 1, is the
    schedule's (whatever the base rates). Its state is the step count alone, so that loading a
    checkpoint's state keeps this run's schedule (the one `resumed_schedule` chose)."""

    def __init__(self, optimizer: Any, schedule: Schedule) -> None:
        self.schedule = schedule
        super().__init__(optimizer)

    def get_lr(self) -> list[float | torch.Tensor]:
        rate = self.schedule.learning_rate(self.last_epoch + 1)
        return [rate for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The step count of a checkpoint (of this scheduler, or torch's LambdaLR that neox
        used before), and every group's rate set from it."""
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self.apply()

    def apply(self) -> None:
        """Set every parameter group's rate to the schedule's at the current step (after a
        checkpoint's optimizer state has set the rates it was saved with)."""
        self._last_lr = self.get_lr()
        for group, rate in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = rate
