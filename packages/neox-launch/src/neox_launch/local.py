"""The local runner: every worker of a node is a child process of the launcher on that node.

``node_workers`` builds the argv and environment of each worker of one node (pure); the local
runner uses it for this machine and the pdsh agent for each remote node. ``run_local`` hands the
commands to the supervisor, which owns the processes.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neox_launch.ports import free_port
from neox_launch.spec import LOOPBACK, MAX_PORT, LaunchSpec
from neox_launch.supervisor import supervise
from neox_launch.worker import LAUNCH_VARIABLES, WorkerCommand, default_omp_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodePlacement:
    """Where one node's workers sit in the job.

    Node ``node_rank`` of ``num_nodes`` runs ranks ``node_rank * nproc_per_node`` onwards;
    ``visible_devices`` (CUDA_VISIBLE_DEVICES) restricts its workers to some devices.
    """

    nproc_per_node: int
    master_port: int
    num_nodes: int = 1
    node_rank: int = 0
    master_addr: str = LOOPBACK
    visible_devices: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.node_rank < self.num_nodes:
            raise ValueError(f"node_rank={self.node_rank} is outside 0..{self.num_nodes - 1}")
        if not 1 <= self.master_port <= MAX_PORT:
            raise ValueError(f"master_port={self.master_port} is outside 1..{MAX_PORT}")


def node_workers(
    placement: NodePlacement,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cpu_count: int | None = None,
) -> list[WorkerCommand]:
    """One command per worker of the node, each environment ``env`` plus the launch variables.

    Unless ``env`` sets it, OMP_NUM_THREADS becomes ``cpu_count // nproc_per_node``, at least 1
    (``cpu_count`` defaults to ``os.cpu_count()``).
    """
    argv = checked_command(command)
    shared = dict(env)
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    shared.setdefault("OMP_NUM_THREADS", str(default_omp_threads(placement.nproc_per_node, cpus)))
    if placement.visible_devices is not None:
        shared["CUDA_VISIBLE_DEVICES"] = placement.visible_devices
    shared["WORLD_SIZE"] = str(placement.nproc_per_node * placement.num_nodes)
    shared["LOCAL_WORLD_SIZE"] = str(placement.nproc_per_node)
    shared["MASTER_ADDR"] = placement.master_addr
    shared["MASTER_PORT"] = str(placement.master_port)
    first = placement.node_rank * placement.nproc_per_node
    return [
        WorkerCommand(
            rank=first + local,
            argv=argv,
            env={**shared, "RANK": str(first + local), "LOCAL_RANK": str(local)},
        )
        for local in range(placement.nproc_per_node)
    ]


def worker_commands(
    spec: LaunchSpec,
    command: Sequence[str],
    *,
    master_port: int,
    base_env: Mapping[str, str],
    cpu_count: int | None = None,
) -> list[WorkerCommand]:
    """One command per worker of a one-node ``spec``, ranks 0..nproc_per_node-1.

    Each environment is ``base_env``, then ``spec.env``, then the launch variables (RANK,
    LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); see ``node_workers``.
    """
    placement = NodePlacement(
        nproc_per_node=spec.nproc_per_node,
        master_port=master_port,
        master_addr=spec.rendezvous_addr or LOOPBACK,
        visible_devices=spec.visible_devices(0),
    )
    return node_workers(placement, command, env={**base_env, **spec.env}, cpu_count=cpu_count)


def run_local(spec: LaunchSpec, command: Sequence[str]) -> int:
    """Start the workers on this machine and wait for them; the launcher's exit code.

    See ``supervise`` for the exit codes and how failures and signals (``spec.preemption``)
    stop the workers.
    """
    port = local_master_port(spec)
    commands = worker_commands(spec, command, master_port=port, base_env=os.environ)
    log.info("starting %d worker(s), master %s:%d", len(commands), spec.rendezvous_addr, port)
    return supervise(commands, policy=spec.preemption)


def describe_local(spec: LaunchSpec, command: Sequence[str]) -> list[str]:
    """One shell line per worker: the variables the launcher sets, then the argv."""
    port = local_master_port(spec)
    commands = worker_commands(spec, command, master_port=port, base_env=os.environ)
    devices = ["CUDA_VISIBLE_DEVICES"] if spec.visible_devices(0) else []
    shown = dict.fromkeys([*LAUNCH_VARIABLES, "OMP_NUM_THREADS", *devices, *sorted(spec.env)])
    return [worker.shell_line(shown) for worker in commands]


def checked_command(command: Sequence[str]) -> tuple[str, ...]:
    """``command`` as a tuple, refusing a string, an empty command or non-str arguments."""
    if isinstance(command, str):
        raise TypeError(f"command must be a sequence of arguments, not the string {command!r}")
    argv = tuple(command)
    if not argv or not argv[0]:
        raise ValueError("the worker command is empty; give the program to run and its arguments")
    if not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"command arguments must be str, got {argv!r}")
    return argv


def local_master_port(spec: LaunchSpec) -> int:
    """The spec's master port, else a free port on this machine's rendezvous address."""
    if spec.master_port is not None:
        return spec.master_port
    return free_port(spec.rendezvous_addr or LOOPBACK)
