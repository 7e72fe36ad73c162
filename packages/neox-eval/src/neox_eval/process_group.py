"""The processes `neox-eval` runs on: one, or a launcher's (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, LOCAL_RANK), which then form one tensor-parallel group over all of them.

GPUs use NCCL, one device per local rank; without a GPU every process runs on the CPU with gloo.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from neox_model import TPGroup


@dataclass(frozen=True)
class LaunchEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LaunchEnv:
        """A process started without a launcher is rank 0 of a world of 1."""
        port = environ.get("MASTER_PORT")
        return cls(
            rank=int(environ.get("RANK", 0)),
            local_rank=int(environ.get("LOCAL_RANK", 0)),
            world_size=int(environ.get("WORLD_SIZE", 1)),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port) if port else None,
        )

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def join(env: LaunchEnv, timeout_minutes: float = 30.0) -> TPGroup:
    """Join the launcher's processes as one tensor-parallel group (a group of one without a
    launcher)."""
    if env.world_size == 1:
        return TPGroup.single()
    if env.master_port is None:
        raise ValueError(
            f"WORLD_SIZE is {env.world_size} but MASTER_PORT is not set: start multi-process "
            "evaluation with a launcher (neox launch, torchrun, ...)"
        )
    device = env.device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    return TPGroup.of(None)


def leave(tp: TPGroup) -> None:
    """Leave the process group that `join` made, if it made one."""
    if tp.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
