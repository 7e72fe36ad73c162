"""The MPI runners: ``mpirun`` of Open MPI, or of a Hydra-based MPI (MPICH, MVAPICH2, Intel MPI).

One ``mpirun`` starts every rank on every node; each rank runs the rendezvous shim, which turns
the MPI implementation's rank variables into RANK, WORLD_SIZE, MASTER_ADDR, ... The propagated
environment (see ``environment``) is exported to remote ranks by name (``-x NAME`` for Open MPI,
``-genvlist`` for Hydra), with the values of mpirun's own environment.
"""

from collections.abc import Sequence

from neox_launch.environment import propagated_env
from neox_launch.machine import Machine
from neox_launch.ranks import shim_argv
from neox_launch.spec import LaunchSpec
from neox_launch.worker import WorkerCommand


def mpi_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine, master_port: int | None
) -> list[WorkerCommand]:
    """The one ``mpirun`` process that starts every rank of ``spec``."""
    exported = propagated_env(machine.environ, spec.env)
    shim = shim_argv(
        machine.python,
        spec.launcher,
        command,
        master_addr=spec.rendezvous_addr,
        master_port=master_port,
        nproc_per_node=spec.nproc_per_node,
    )
    if spec.launcher == "openmpi":
        flags = openmpi_flags(spec, list(exported), is_root=machine.is_root)
    else:
        flags = hydra_flags(spec, list(exported))
    argv = ["mpirun", *flags, *spec.launcher_args, *shim]
    # Open MPI's mpirun passes SIGUSR1/2 on to the ranks, and kills them on SIGTERM or SIGINT:
    # a preemption reaches the ranks as the user signal. Hydra passes SIGTERM/SIGINT on itself
    # (its exit code under SIGUSR1 was 0 for ranks killed by it, so it is not used there).
    passed = spec.preemption.user_signal() if spec.launcher == "openmpi" else None
    env = {**machine.environ, **spec.env}
    # Hydra (MPICH, MVAPICH, Intel MPI) reports 0 now and then for ranks a passed-on signal
    # stopped or killed: after a preemption its 0 says nothing
    hydra = spec.launcher != "openmpi"
    return [
        WorkerCommand(
            0,
            tuple(argv),
            env,
            label="mpirun",
            preemption_signal=passed,
            zero_after_signal_is_success=not hydra,
        )
    ]


def openmpi_flags(spec: LaunchSpec, exported: Sequence[str], *, is_root: bool) -> list[str]:
    """Open MPI's mpirun flags: ranks, placement, root permission, exported variables."""
    flags = ["-np", str(spec.world_size)]
    if is_root:  # Open MPI refuses to run as root without it
        flags.append("--allow-run-as-root")
    if spec.nodes:
        flags += ["-host", ",".join(f"{host}:{spec.nproc_per_node}" for host in spec.hosts)]
    elif spec.num_nodes > 1:
        flags += ["--map-by", f"ppr:{spec.nproc_per_node}:node"]
    # Workers size their own thread pools (OMP_NUM_THREADS); do not pin each to one core.
    flags += ["--bind-to", "none"]
    for name in exported:
        flags += ["-x", name]
    return flags


def hydra_flags(spec: LaunchSpec, exported: Sequence[str]) -> list[str]:
    """Hydra's mpirun flags (MPICH, MVAPICH2, Intel MPI): ranks, per node, hosts, variables."""
    flags = ["-np", str(spec.world_size), "-ppn", str(spec.nproc_per_node)]
    if spec.nodes:
        flags += ["-hosts", ",".join(spec.hosts)]
    if exported:
        flags += ["-genvlist", ",".join(exported)]
    return flags
