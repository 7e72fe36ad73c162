"""Preemption: on a preemption signal (`preemption_signals`: SIGTERM, SIGINT, SIGUSR1 — Slurm's
warning signal — and SIGUSR2 by default) finish the current step, save a checkpoint and exit
with `PREEMPTED` (75, EX_TEMPFAIL: "try again"); the next start of the same run resumes from
that checkpoint by itself.

A signal may reach only some ranks, so every step the ranks agree (an all-reduce of the flag)
and stop together, after the same step.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

PREEMPTED = os.EX_TEMPFAIL


class Preemption:
    """Catches the preemption `signals` while a run trains (a context manager)."""

    def __init__(self, signals: Sequence[int]) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        for signum in self.signals:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            log.info("received %s: stopping after this step", signal.Signals(signum).name)
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
