"""The pdsh runner: one ``pdsh -w HOST`` per node runs the node agent there over SSH.

The remote command enters the launching directory, exports the propagated environment (see
``environment``) and execs ``python -m neox_launch.agent``, which starts that node's workers.
One pdsh per node lets the launcher see the first node that fails and stop the others; a
stopped pdsh (SIGTERM, also in place of SIGINT, which pdsh takes as a status request) closes its
SSH session, and the agent, watching its stdin, stops its workers.
``PDSH_RCMD_TYPE`` defaults to ssh; ``PDSH_SSH_ARGS_APPEND`` passes options to ssh.
"""

import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence

from neox_launch.environment import propagated_env
from neox_launch.machine import Machine
from neox_launch.spec import DEFAULT_MASTER_PORT, LaunchSpec
from neox_launch.supervisor import WorkerStartError
from neox_launch.worker import WorkerCommand

AGENT = "neox_launch.agent"
_SSH_CHECK_TIMEOUT = 60.0


def pdsh_commands(
    spec: LaunchSpec, command: Sequence[str], machine: Machine, master_port: int | None
) -> list[WorkerCommand]:
    """One ``pdsh`` process per node of ``spec``, each starting that node's agent."""
    exports = propagated_env(machine.environ, spec.env)
    env = {"PDSH_RCMD_TYPE": "ssh", **machine.environ}
    commands = []
    for rank, host in enumerate(spec.hosts):
        line = remote_line(spec, command, machine.python, machine.cwd, exports, rank, master_port)
        argv = ["pdsh", "-S", "-w", host, *spec.launcher_args, line]
        label = f"node {rank} on {host}"
        # Any stop is SIGTERM to pdsh: its SSH session closes, and the agent sees stdin end.
        stop = signal.SIGTERM
        commands.append(WorkerCommand(rank, tuple(argv), env, label, stop, preemption_signal=stop))
    return commands


def remote_line(
    spec: LaunchSpec,
    command: Sequence[str],
    python: str,
    cwd: str,
    exports: Mapping[str, str],
    node_rank: int,
    master_port: int | None,
) -> str:
    """The shell line run on node ``node_rank``: cd, export, exec the agent."""
    agent = [
        python,
        "-m",
        AGENT,
        f"--node-rank={node_rank}",
        f"--num-nodes={spec.num_nodes}",
        f"--nproc-per-node={spec.nproc_per_node}",
        f"--master-addr={spec.rendezvous_addr or spec.hosts[0]}",
        f"--master-port={master_port or DEFAULT_MASTER_PORT}",
        "--watch-stdin",
        *spec.preemption.flags(),
    ]
    devices = spec.visible_devices(node_rank)
    if devices is not None:
        agent.append(f"--visible-devices={devices}")
    parts = [f"cd {shlex.quote(cwd)}"]
    if exports:
        parts.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items()))
    parts.append("exec " + shlex.join([*agent, "--", *command]))
    return " && ".join(parts)


def check_ssh(spec: LaunchSpec, program: str, environ: Mapping[str, str]) -> None:
    """Run ``true`` on every node through pdsh; a node that cannot be reached is an error."""
    argv = [program, "-S", "-w", ",".join(spec.hosts), *spec.launcher_args, "true"]
    try:
        result = subprocess.run(
            argv,
            env={"PDSH_RCMD_TYPE": "ssh", **environ},
            capture_output=True,
            text=True,
            timeout=_SSH_CHECK_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        output, failed = f"no answer in {_SSH_CHECK_TIMEOUT:.0f} s", True
    else:
        output, failed = (result.stderr or result.stdout).strip(), result.returncode != 0
    if failed:
        raise WorkerStartError(
            f"cannot run a command on {', '.join(spec.hosts)} with pdsh over SSH ({output}); "
            "set up passwordless SSH to every node, or set no_ssh_check to skip this check"
        )
