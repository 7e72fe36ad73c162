"""Process-group set-up for training: through DeepSpeed, from the launcher's environment.

Generation and evaluation join with torch alone (`neox_model.join_process_group`).
"""

from __future__ import annotations

import atexit
import os

import torch

from neox_model import (
    COLLECTIVE_TIMEOUT_MINUTES,
    LaunchEnv,
    collective_timeout,
    leave_process_group,
)
from neox_train.engine.deepspeed_internals import without_shm_comm_op

DistEnv = LaunchEnv  # the launcher's RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT


def init_distributed(
    env: LaunchEnv, timeout_minutes: float = COLLECTIVE_TIMEOUT_MINUTES
) -> torch.device:
    """Join the process group through DeepSpeed and return this rank's device."""
    import deepspeed  # heavy: imported when a run starts, not when the package is imported

    device, backend = env.device()
    without_shm_comm_op()  # DeepSpeed would build it now, for a collective neox never uses
    # DeepSpeed's engine insists on reading LOCAL_RANK from the environment
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    deepspeed.init_distributed(
        dist_backend=backend,
        auto_mpi_discovery=False,
        init_method=env.init_method(),
        rank=env.rank,
        world_size=env.world_size,
        timeout=collective_timeout(timeout_minutes),
        verbose=False,
    )
    atexit.register(leave_process_group)
    return device
