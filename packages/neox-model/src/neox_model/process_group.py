"""Joining the processes a launcher started (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT in the environment): the training workers', generation's and evaluation's shared
first step. A process started without a launcher is rank 0 of a world of 1.

GPUs use NCCL, one device per local rank, with gloo beside it for tensors on the CPU (the small
metric and flag reductions training runs on CPU tensors: NCCL takes CUDA tensors only); without a
GPU every process runs on the CPU with gloo.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

# How long a collective waits for the other ranks before it fails (training's
# `distributed_timeout_minutes`, generation and evaluation alike).
COLLECTIVE_TIMEOUT_MINUTES = 30.0


@dataclass(frozen=True)
class LaunchEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LaunchEnv:
        port = environ.get("MASTER_PORT")
        return cls(
            rank=int(environ.get("RANK", 0)),
            local_rank=int(environ.get("LOCAL_RANK", 0)),
            world_size=int(environ.get("WORLD_SIZE", 1)),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port) if port else None,
        )

    def device(self) -> tuple[torch.device, str]:
        """This rank's device (made current on a GPU) and its collective backend."""
        if torch.cuda.is_available():
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            return device, "cpu:gloo,cuda:nccl"  # each tensor's collectives by its device
        return torch.device("cpu"), "gloo"

    def init_method(self) -> str:
        """The rendezvous address; a free local port for a world of one."""
        if self.master_port is None and self.world_size > 1:
            raise ValueError(
                f"WORLD_SIZE is {self.world_size} but MASTER_PORT is not set: start "
                "multi-process runs with a launcher (neox launch, torchrun, ...)"
            )
        port = self.master_port
        if port is None:
            with socket.socket() as sock:
                sock.bind((self.master_addr, 0))
                port = int(sock.getsockname()[1])
        return f"tcp://{self.master_addr}:{port}"


def leave_process_group() -> None:
    """Leave the process group (registered at exit by `join_process_group`). Its gloo threads end
    with it unless something else still holds the group (torch.compile's caches do); a thread
    still alive while the interpreter tears down can abort the process ("terminate called
    without an active exception"), which is why workers end through `exit_process`."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def collective_timeout(minutes: float) -> datetime.timedelta:
    """The timeout of every collective, also in the groups made later (tensor, pipeline and data
    parallel ones, DeepSpeed's): torch gives a new group its module default, not the world's."""
    import torch.distributed.distributed_c10d as c10d

    timeout = datetime.timedelta(minutes=minutes)
    c10d.default_pg_timeout = timeout
    if getattr(c10d, "default_pg_nccl_timeout", None) is not None:
        c10d.default_pg_nccl_timeout = timeout
    return timeout


def join_process_group(
    env: LaunchEnv, timeout_minutes: float = COLLECTIVE_TIMEOUT_MINUTES
) -> torch.device:
    """Join the launcher's processes with torch alone; returns this rank's device."""
    device, backend = env.device()
    dist.init_process_group(
        backend,
        init_method=env.init_method(),
        rank=env.rank,
        world_size=env.world_size,
        timeout=collective_timeout(timeout_minutes),
    )
    atexit.register(leave_process_group)
    return device


def exit_process(code: int) -> NoReturn:
    """End a worker process with `code` after a normal finish, without the interpreter's teardown.

    Everything Python would do at exit is done here first, in its order: threading's exit hooks
    run (a thread pool's idle workers stop) and non-daemon threads are joined, the `atexit`
    handlers run (the process group is left, loggers and writers flushed, data-loader
    workers stopped) and the standard streams are flushed. Only the destruction of C++ objects
    that remain is skipped: gloo and the c10d store keep threads whose destructors abort the
    process now and then ("terminate called without an active exception", exit 134) after the
    work has finished and been saved.
    """
    if threading.current_thread() is threading.main_thread():
        # what the interpreter does first at exit: threading's own exit hooks (they stop the
        # idle workers of every ThreadPoolExecutor, which would otherwise wait forever), then
        # every non-daemon thread joined
        threading._shutdown()  # type: ignore[attr-defined]
    else:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to deliver
            stream.flush()
    os._exit(code)
