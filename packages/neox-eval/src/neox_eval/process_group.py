"""The processes `neox-eval` runs on: one, or a launcher's, which then form one
tensor-parallel group over all of them (`neox_model.LaunchEnv`, `join_process_group`)."""

from __future__ import annotations

import torch.distributed as dist

from neox_model import COLLECTIVE_TIMEOUT_MINUTES, LaunchEnv, TPGroup, join_process_group


def join(env: LaunchEnv, timeout_minutes: float = COLLECTIVE_TIMEOUT_MINUTES) -> TPGroup:
    """Join the launcher's processes as one tensor-parallel group (a group of one without a
    launcher)."""
    if env.world_size == 1:
        return TPGroup.single()
    join_process_group(env, timeout_minutes)
    return TPGroup.of(None)


def leave(tp: TPGroup) -> None:
    """Leave the process group that `join` made, if it made one."""
    if tp.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
