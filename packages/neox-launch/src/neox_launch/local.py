"""The local runner: every worker is a child process of the launcher on this machine.

``worker_commands`` builds the argv and environment of each worker (pure); ``run_local`` hands
them to the supervisor, which owns the processes.
"""

import logging
import os
from collections.abc import Mapping, Sequence

from neox_launch.ports import free_port
from neox_launch.spec import MAX_PORT, LaunchSpec
from neox_launch.supervisor import DEFAULT_GRACE_PERIOD, supervise
from neox_launch.worker import LAUNCH_VARIABLES, WorkerCommand

log = logging.getLogger(__name__)


def worker_commands(
    spec: LaunchSpec,
    command: Sequence[str],
    *,
    master_port: int,
    base_env: Mapping[str, str],
    cpu_count: int | None = None,
) -> list[WorkerCommand]:
    """One command per local worker, ranks 0..nproc_per_node-1.

    Each environment is ``base_env``, then ``spec.env``, then the launch variables (RANK,
    LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Unless already set,
    OMP_NUM_THREADS becomes ``cpu_count // nproc_per_node``, at least 1 (``cpu_count`` defaults to
    ``os.cpu_count()``).
    """
    argv = _checked_command(command)
    if not 1 <= master_port <= MAX_PORT:
        raise ValueError(f"master_port={master_port} is outside 1..{MAX_PORT}")
    shared = {**base_env, **spec.env}
    shared.setdefault("OMP_NUM_THREADS", str(_omp_threads(spec.nproc_per_node, cpu_count)))
    shared["WORLD_SIZE"] = str(spec.world_size)
    shared["LOCAL_WORLD_SIZE"] = str(spec.nproc_per_node)
    shared["MASTER_ADDR"] = spec.master_addr
    shared["MASTER_PORT"] = str(master_port)
    return [
        WorkerCommand(
            rank=rank, argv=argv, env={**shared, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        )
        for rank in range(spec.nproc_per_node)
    ]


def run_local(
    spec: LaunchSpec, command: Sequence[str], *, grace_period: float = DEFAULT_GRACE_PERIOD
) -> int:
    """Start the workers on this machine and wait for them; the launcher's exit code.

    See ``supervise`` for the exit codes and how failures and signals stop the workers.
    """
    port = _master_port(spec)
    commands = worker_commands(spec, command, master_port=port, base_env=os.environ)
    log.info("starting %d worker(s), master %s:%d", len(commands), spec.master_addr, port)
    return supervise(commands, grace_period=grace_period)


def describe_local(spec: LaunchSpec, command: Sequence[str]) -> list[str]:
    """One shell line per worker: the variables the launcher sets, then the argv."""
    commands = worker_commands(spec, command, master_port=_master_port(spec), base_env=os.environ)
    names = dict.fromkeys([*LAUNCH_VARIABLES, "OMP_NUM_THREADS", *sorted(spec.env)])
    return [worker.shell_line(names) for worker in commands]


def _checked_command(command: Sequence[str]) -> tuple[str, ...]:
    if isinstance(command, str):
        raise TypeError(f"command must be a sequence of arguments, not the string {command!r}")
    argv = tuple(command)
    if not argv or not argv[0]:
        raise ValueError("the worker command is empty; give the program to run and its arguments")
    if not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"command arguments must be str, got {argv!r}")
    return argv


def _omp_threads(nproc_per_node: int, cpu_count: int | None) -> int:
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cpus // nproc_per_node)


def _master_port(spec: LaunchSpec) -> int:
    return spec.master_port if spec.master_port is not None else free_port(spec.master_addr)
