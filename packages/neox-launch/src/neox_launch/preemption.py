"""Preemption: the signals that ask a job to save and stop, and how long the launcher waits.

A scheduler about to take the nodes back signals the launcher, the workers, or both (Slurm:
SIGTERM at the end, ``sbatch --signal``'s SIGUSR1 before it; a user: Ctrl-C). Any of
``signals`` reaching the launcher is passed on to every worker, which finishes its step, saves
and exits ``PREEMPTED`` (75, EX_TEMPFAIL: "try again"); after ``grace_period`` seconds the
launcher kills what is still running. A job whose workers all exited 75 exits 75 itself, so a
requeue script can tell a preempted run from a failed one.
"""

import argparse
import math
import os
import signal
from dataclasses import dataclass

PREEMPTED = os.EX_TEMPFAIL
# A worker exits this (76, EX_PROTOCOL) when its collective lost another rank: a consequence of
# that rank's failure, not a cause. The launcher then names the rank that failed first.
PEER_LOST = os.EX_PROTOCOL
DEFAULT_GRACE_PERIOD = 600.0
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# A scheduler signals the launcher and its process group at once: signals this close together
# are one request; a repeat after this long (Ctrl-C pressed again) kills the workers at once.
REPEAT_AFTER = 1.0
_UNCATCHABLE = (signal.SIGKILL, signal.SIGSTOP)


@dataclass(frozen=True)
class PreemptionPolicy:
    """Which signals mean "save and stop", and how many seconds the workers get to do it."""

    grace_period: float = DEFAULT_GRACE_PERIOD
    signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS

    def __post_init__(self) -> None:
        if isinstance(self.grace_period, bool) or not isinstance(self.grace_period, int | float):
            raise TypeError(f"grace_period must be a number of seconds, got {self.grace_period!r}")
        if not (math.isfinite(self.grace_period) and self.grace_period >= 0):
            raise ValueError(
                f"grace_period={self.grace_period} must be a finite number of seconds, at least 0"
            )
        object.__setattr__(self, "signals", tuple(map(parse_signal, self.signals)))

    def user_signal(self) -> signal.Signals | None:
        """The first of SIGUSR1 and SIGUSR2 among the signals: what srun and Open MPI's mpirun
        pass on to their ranks (on SIGTERM or SIGINT they kill them)."""
        users = (signal.SIGUSR1, signal.SIGUSR2)
        return next((signum for signum in self.signals if signum in users), None)

    def flags(self) -> list[str]:
        """The command-line flags that give this policy (see ``add_arguments``)."""
        names = ",".join(signum.name for signum in self.signals)
        return [f"--preemption-grace-period={self.grace_period:g}", f"--preemption-signals={names}"]


def parse_signal(value: str | int) -> signal.Signals:
    """A catchable signal from its number or name (``SIGUSR1``, ``USR1``, ``usr1``)."""
    try:
        if isinstance(value, int):
            signum = signal.Signals(value)
        else:
            name = value.strip().upper()
            signum = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(
            f"{value!r} is not a signal; give names such as SIGTERM, SIGINT, SIGUSR1, SIGUSR2"
        ) from None
    if signum in _UNCATCHABLE:
        raise ValueError(f"{signum.name} cannot be caught, so it cannot ask a job to save")
    return signum


def parse_signals(text: str) -> tuple[signal.Signals, ...]:
    """Comma-separated signal names (``SIGTERM,SIGUSR1``); an empty string is no signal."""
    return tuple(parse_signal(name) for name in text.split(",") if name.strip())


def add_arguments(parser: argparse._ActionsContainer) -> None:
    """``--preemption-grace-period`` and ``--preemption-signals``; read back by ``from_args``."""
    parser.add_argument(
        "--preemption-grace-period",
        type=float,
        default=DEFAULT_GRACE_PERIOD,
        metavar="S",
        help="seconds the workers get to save and stop after a signal (%(default)g)",
    )
    parser.add_argument(
        "--preemption-signals",
        default=",".join(signum.name for signum in DEFAULT_SIGNALS),
        metavar="LIST",
        help="signals that mean save and stop, passed on to the workers (%(default)s)",
    )


def from_args(args: argparse.Namespace) -> PreemptionPolicy:
    """The policy the flags of ``add_arguments`` give."""
    return PreemptionPolicy(args.preemption_grace_period, parse_signals(args.preemption_signals))
