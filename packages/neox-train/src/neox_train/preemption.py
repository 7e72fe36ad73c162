"""Preemption: on SIGTERM or SIGUSR1 (Slurm's warning signal) finish the current step, save a
checkpoint and exit with `PREEMPTED` (75, EX_TEMPFAIL: "try again"); the next start of the same
run resumes from that checkpoint by itself.

A signal may reach only some ranks, so every step the ranks agree (an all-reduce of the flag)
and stop together, after the same step.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption:
    """Catches the preemption signals while a run trains (a context manager)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        for signum in SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def agreed(self) -> bool:
        """True on every rank when any rank has received a preemption signal."""
        flag = torch.tensor([1.0 if self.received is not None else 0.0])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class Preempted(Exception):
    """Raised to leave the training loop after a preemption checkpoint."""

    exit_code = PREEMPTED
