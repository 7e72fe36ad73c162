"""neox-launch: start neox workers, one process per device (standard library only, no torch)."""

from neox_launch.devices import count_local_gpus
from neox_launch.local import worker_commands
from neox_launch.runner import describe, launch
from neox_launch.spec import LaunchSpec
from neox_launch.worker import WorkerCommand

__all__ = [
    "LaunchSpec",
    "WorkerCommand",
    "count_local_gpus",
    "describe",
    "launch",
    "worker_commands",
]
