"""The Slurm runner (``srun``), and sbatch scripts that run the same job.

``srun`` starts every task; each runs the rendezvous shim, which reads SLURM_PROCID,
SLURM_LOCALID and SLURM_NTASKS, and takes the first node of the job as the master unless one is
given. srun passes its whole environment to the tasks. ``--kill-on-bad-exit=1`` ends the step
when a task fails; ``--quit-on-interrupt`` makes one SIGINT (Ctrl-C) end it.
"""

import shlex
from collections.abc import Sequence
from dataclasses import replace

from neox_launch.environment import propagated_env
from neox_launch.machine import Machine
from neox_launch.ranks import shim_argv
from neox_launch.spec import LaunchSpec, SlurmOptions
from neox_launch.worker import WorkerCommand


def srun_argv(
    spec: LaunchSpec, command: Sequence[str], python: str, master_port: int | None
) -> list[str]:
    """``srun ... python -m neox_launch.rendezvous ... -- command``."""
    flags = [
        f"--nodes={spec.num_nodes}",
        f"--ntasks={spec.world_size}",
        f"--ntasks-per-node={spec.nproc_per_node}",
        "--kill-on-bad-exit=1",
        "--quit-on-interrupt",
    ]
    if spec.nodes:
        flags.append(f"--nodelist={','.join(spec.hosts)}")
    shim = shim_argv(
        python,
        "slurm",
        command,
        master_addr=spec.master_addr,
        master_port=master_port,
        nproc_per_node=spec.nproc_per_node,
    )
    return ["srun", *flags, *spec.slurm.flags(), *spec.launcher_args, *shim]


def srun_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine, master_port: int | None
) -> list[WorkerCommand]:
    """The one ``srun`` process that starts every task of ``spec``."""
    argv = srun_argv(spec, command, machine.python, master_port)
    env = {**machine.environ, **spec.env}
    # srun passes SIGUSR1/2 on to the tasks, and kills them on SIGTERM (and, with
    # --quit-on-interrupt, on SIGINT).
    passed = spec.preemption.user_signal()
    return [WorkerCommand(0, tuple(argv), env, label="srun", preemption_signal=passed)]


def sbatch_script(
    spec: LaunchSpec,
    command: Sequence[str],
    machine: Machine,
    *,
    master_port: int | None = None,
    gpus_per_node: int = 0,
    job_name: str = "neox",
) -> str:
    """A batch script that allocates the nodes of ``spec`` and runs it with srun.

    The header asks for ``num_nodes`` nodes, ``nproc_per_node`` tasks per node and
    ``gpus_per_node`` GPUs per node (0: none asked), with the spec's comment, account and
    partition; the body enters the launching directory, exports the propagated environment and
    runs the srun line (which takes the Slurm options from the allocation).
    """
    header = {
        "job-name": job_name,
        "nodes": str(spec.num_nodes),
        "ntasks-per-node": str(spec.nproc_per_node),
        **({"gpus-per-node": str(gpus_per_node)} if gpus_per_node else {}),
        **spec.slurm.settings(),
    }
    in_job = replace(spec, slurm=SlurmOptions())
    exports = propagated_env(machine.environ, spec.env)
    lines = [
        "#!/bin/bash",
        f"# Written by neox-launch: {spec.num_nodes} node(s) x {spec.nproc_per_node} task(s).",
        *(_directive(name, value) for name, value in header.items()),
        "set -euo pipefail",
        f"cd {shlex.quote(machine.cwd)}",
        *(f"export {name}={shlex.quote(value)}" for name, value in exports.items()),
        "exec " + shlex.join(srun_argv(in_job, command, machine.python, master_port)),
    ]
    return "\n".join(lines) + "\n"


def _directive(name: str, value: str) -> str:
    """``#SBATCH --name=value``, double-quoted when needed (sbatch splits at blanks)."""
    if '"' in value or "\n" in value:
        raise ValueError(f"Slurm {name} {value!r}: sbatch directives cannot hold '\"' or newlines")
    if any(char.isspace() or char in "'#" for char in value):
        value = f'"{value}"'
    return f"#SBATCH --{name}={value}"
