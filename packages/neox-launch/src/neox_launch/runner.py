"""The runner dispatch: one entry point to start, or describe, a launch with any launcher.

Every runner but local builds the launcher program's command line (pure: from the spec, the
worker command and the machine); ``launch`` then finds the program (an error names what to
install), checks SSH for pdsh, and supervises the launcher process(es) like workers.
"""

import logging
from collections.abc import Callable, Mapping, Sequence

from neox_launch.jsrun import jsrun_commands
from neox_launch.local import checked_command, describe_local, run_local
from neox_launch.machine import Machine
from neox_launch.mpi import mpi_commands
from neox_launch.pdsh import check_ssh, pdsh_commands
from neox_launch.ports import free_port
from neox_launch.program import find_program
from neox_launch.slurm import srun_commands
from neox_launch.spec import LOOPBACK, SINGLE_NODE_LAUNCHERS, LaunchSpec
from neox_launch.supervisor import supervise
from neox_launch.torchrun import torchrun_commands
from neox_launch.worker import WorkerCommand

log = logging.getLogger(__name__)

Builder = Callable[[LaunchSpec, Sequence[str], Machine, int | None], list[WorkerCommand]]
BUILDERS: Mapping[str, Builder] = {
    "pdsh": pdsh_commands,
    "openmpi": mpi_commands,
    "mvapich": mpi_commands,
    "mpich": mpi_commands,
    "impi": mpi_commands,
    "slurm": srun_commands,
    "jsrun": jsrun_commands,
    "torchrun": torchrun_commands,
}


def launch(spec: LaunchSpec, command: Sequence[str], machine: Machine | None = None) -> int:
    """Start ``command`` as the workers ``spec`` describes and wait; the launcher's exit code.

    Raises WorkerStartError (ProgramNotFoundError for a missing launcher program) before
    anything starts when the launch cannot be done.
    """
    if spec.launcher == "local":
        return run_local(spec, command)
    machine = machine or Machine.current()
    program = find_program(spec.launcher, machine.environ, machine.python)
    commands = [each.with_program(program) for each in launcher_commands(spec, command, machine)]
    if spec.launcher == "pdsh" and spec.ssh_check:
        check_ssh(spec, program, machine.environ)
    log.info(
        "starting %d worker(s) on %d node(s) with %s", spec.world_size, spec.num_nodes, program
    )
    return supervise(commands, policy=spec.preemption)


def describe(spec: LaunchSpec, command: Sequence[str], machine: Machine | None = None) -> list[str]:
    """What ``launch`` would start, as shell lines (one per process); starts nothing.

    A free master port is picked now when ``spec.master_port`` is None and the master is this
    machine; ``launch`` picks its own. Lines show the variables set on top of the environment.
    """
    if spec.launcher == "local":
        return describe_local(spec, command)
    machine = machine or Machine.current()
    return [
        each.shell_line(_added(each.env, machine.environ))
        for each in launcher_commands(spec, command, machine)
    ]


def launcher_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine
) -> list[WorkerCommand]:
    """The launcher process(es) for a non-local ``spec``, with the program's plain name."""
    return BUILDERS[spec.launcher](
        spec, checked_command(command), machine, master_port(spec, machine)
    )


def master_port(spec: LaunchSpec, machine: Machine) -> int | None:
    """The spec's port; else a free port when every worker runs on this machine; else None
    (the workers' default, 29500)."""
    if spec.master_port is not None:
        return spec.master_port
    on_this_machine = spec.launcher in SINGLE_NODE_LAUNCHERS or (
        bool(spec.nodes) and all(machine.is_local(host) for host in spec.hosts)
    )
    return free_port(spec.rendezvous_addr or LOOPBACK) if on_this_machine else None


def _added(env: Mapping[str, str], base: Mapping[str, str]) -> list[str]:
    return [name for name, value in env.items() if base.get(name) != value]
