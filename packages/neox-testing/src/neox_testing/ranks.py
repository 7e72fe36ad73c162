"""Starting a test's ranks on this machine: `start_ranks` starts a command as a launcher starts
its workers; `spawn_ranks` runs a function in several processes (torch.multiprocessing)."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from neox_testing.ports import free_port


def rank_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The variables a launcher gives rank `rank` of `world_size`, all on this machine, with one
    thread each (the tests run on a few shared cores)."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def start_ranks(argv: Sequence[Any], world_size: int, **popen: Any) -> list[subprocess.Popen[str]]:
    """`argv` started as `world_size` ranks, as a launcher starts them (text streams; `popen`
    is the rest of `subprocess.Popen`'s arguments, e.g. where the output goes)."""
    port, command = free_port(), [str(arg) for arg in argv]
    envs = [{**os.environ, **rank_env(rank, world_size, port)} for rank in range(world_size)]
    return [subprocess.Popen(command, env=env, text=True, **popen) for env in envs]


def spawn_ranks(worker: Callable[..., None], nprocs: int, *args: Any) -> None:
    """`worker(rank, port, *args)` in `nprocs` processes, `port` free for their rendezvous.

    A rank that raises or dies fails the call; one killed by a signal prints every thread's
    Python stack first (faulthandler). A rank whose worker returns ends as neox's workers do
    (`_end_rank`).
    """
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(worker, free_port(), *args), nprocs=nprocs, join=True)


def _rank(rank: int, worker: Callable[..., None], port: int, *args: Any) -> None:
    faulthandler.enable(file=sys.stderr, all_threads=True)
    worker(rank, port, *args)
    _end_rank()


def _end_rank() -> NoReturn:
    """Leave the process group, then end this process with exit code 0 without the interpreter's
    teardown (`neox_model.exit_process`: exit handlers run, the streams are flushed).

    Why: gloo's worker thread drops its reference to a collective's tensors after the caller has
    seen the collective finish. When that is the last reference to a tensor made in Python, the
    thread takes the GIL to free it, and once the interpreter is finalizing, taking the GIL ends
    the thread (pthread_exit); the unwinding reaches a noexcept destructor and calls
    std::terminate: "terminate called without an active exception", SIGABRT, now and then.
    Destroying the group joins gloo's threads only when nothing else holds the group, and a
    model compiled with torch.compile keeps holding it, so the interpreter must not finalize.
    """
    import torch.distributed as dist

    from neox_model import exit_process

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    exit_process(0)
