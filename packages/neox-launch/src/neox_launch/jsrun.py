"""The jsrun runner (IBM LSF, e.g. Summit): one resource set per worker, ``nproc_per_node`` per
host, each with one task and one GPU; the rendezvous shim reads JSM_NAMESPACE_*. jsrun passes
its environment on to the tasks."""

from collections.abc import Sequence

from neox_launch.machine import Machine
from neox_launch.ranks import shim_argv
from neox_launch.spec import LaunchSpec
from neox_launch.worker import WorkerCommand


def jsrun_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine, master_port: int | None
) -> list[WorkerCommand]:
    """The one ``jsrun`` process that starts every rank of ``spec``."""
    flags = [
        f"--nrs={spec.world_size}",
        f"--rs_per_host={spec.nproc_per_node}",
        "--tasks_per_rs=1",
        "--gpu_per_rs=1",
        "--bind=none",
    ]
    shim = shim_argv(
        machine.python,
        "jsrun",
        command,
        master_addr=spec.rendezvous_addr,
        master_port=master_port,
        nproc_per_node=spec.nproc_per_node,
    )
    argv = ["jsrun", *flags, *spec.launcher_args, *shim]
    return [WorkerCommand(0, tuple(argv), {**machine.environ, **spec.env}, label="jsrun")]
