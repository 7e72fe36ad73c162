"""Process-group set-up from the launcher's environment (RANK, WORLD_SIZE, MASTER_*).

GPUs use NCCL, one device per local rank; without a GPU every rank runs on the CPU with gloo.
A process started without a launcher is rank 0 of a world of 1.
"""

from __future__ import annotations

import atexit
import datetime
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> DistEnv:
        port = environ.get("MASTER_PORT")
        return cls(
            rank=int(environ.get("RANK", 0)),
            local_rank=int(environ.get("LOCAL_RANK", 0)),
            world_size=int(environ.get("WORLD_SIZE", 1)),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port) if port else None,
        )


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _destroy_process_group() -> None:
    """Leave the process group before the interpreter exits: gloo's threads otherwise outlive
    it now and then, and the process aborts ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device(env: DistEnv) -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    return torch.device("cpu"), "gloo"


def _init_method(env: DistEnv) -> str:
    if env.master_port is None and env.world_size > 1:
        raise RuntimeError("MASTER_PORT is not set: start multi-rank runs with a launcher")
    return f"tcp://{env.master_addr}:{env.master_port or _free_port(env.master_addr)}"


def init_distributed(env: DistEnv, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group through DeepSpeed (training) and return this rank's device."""
    import deepspeed  # heavy: imported when a run starts, not when the package is imported

    device, backend = _device(env)
    # DeepSpeed's engine insists on reading LOCAL_RANK from the environment
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    deepspeed.init_distributed(
        dist_backend=backend,
        auto_mpi_discovery=False,
        init_method=_init_method(env),
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        verbose=False,
    )
    atexit.register(_destroy_process_group)
    return device


def init_process_group(env: DistEnv, timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group with torch alone (inference needs no DeepSpeed)."""
    import torch.distributed as dist

    device, backend = _device(env)
    dist.init_process_group(
        backend,
        init_method=_init_method(env),
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    atexit.register(_destroy_process_group)
    return device
