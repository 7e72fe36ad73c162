"""The torchrun runner: PyTorch's launcher starts this machine's workers and sets their RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT itself (no shim). One node only."""

from collections.abc import Sequence

from neox_launch.machine import Machine
from neox_launch.spec import LOOPBACK, LaunchSpec
from neox_launch.worker import WorkerCommand, default_omp_threads


def torchrun_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine, master_port: int | None
) -> list[WorkerCommand]:
    """The one ``torchrun`` process that starts the workers of ``spec``."""
    flags = [
        "--nnodes=1",
        f"--nproc-per-node={spec.nproc_per_node}",
        f"--master-addr={spec.rendezvous_addr or LOOPBACK}",
    ]
    if master_port is not None:
        flags.append(f"--master-port={master_port}")
    argv = ["torchrun", *flags, *spec.launcher_args, "--no-python", *command]
    env = {**machine.environ, **spec.env}
    # torchrun would set 1 and warn; share the CPUs out like the other runners.
    env.setdefault(
        "OMP_NUM_THREADS", str(default_omp_threads(spec.nproc_per_node, machine.cpu_count))
    )
    devices = spec.visible_devices(0)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    return [WorkerCommand(0, tuple(argv), env, label="torchrun")]
