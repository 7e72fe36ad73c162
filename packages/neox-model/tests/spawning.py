"""Running a test's worker as several gloo processes (``torch.multiprocessing.spawn``)."""

import faulthandler
import socket
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _traced(rank: int, worker: Callable[..., None], *args: Any) -> None:
    # a rank that dies by a signal (a native abort) prints every thread's Python stack first
    faulthandler.enable(file=sys.stderr, all_threads=True)
    worker(rank, *args)


def spawn_ranks(worker: Callable[..., None], nprocs: int, *args: Any) -> None:
    """``worker(rank, port, *args)`` in ``nprocs`` processes, ``port`` free for the rendezvous.

    A rank killed by a signal (seen once in CI: a native abort, "terminate called without an
    active exception", which no rerun here reproduced) is retried once on a new port, with a
    warning that names it; a rank that raises fails at once, and so does a second crash.
    """
    try:
        mp.spawn(_traced, args=(worker, free_port(), *args), nprocs=nprocs, join=True)
    except mp.ProcessExitedException as crash:
        if not crash.signal_name:
            raise
        warnings.warn(f"retrying once after a native crash of the ranks: {crash}", stacklevel=2)
        mp.spawn(_traced, args=(worker, free_port(), *args), nprocs=nprocs, join=True)
