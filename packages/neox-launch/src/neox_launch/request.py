"""A launch request (the launch keys of a run config, or neox-launch's flags) and ``plan``,
which resolves it against the machine into a ``LaunchSpec``.

Without a hostfile the job runs on this machine (the default pdsh launcher becomes local) or on
the nodes a scheduler picks; with one, on the nodes it lists, narrowed by include / exclude /
num_nodes / num_gpus. ``deepspeed_slurm`` means the slurm launcher; ``deepspeed_mpi`` an MPI
launcher or jsrun (openmpi in place of the default pdsh): the ranks then come from the
scheduler, with no SSH.
"""

import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, cast

from neox_launch.environment import read_env_files
from neox_launch.hostfile import Host, find_hostfile, read_hostfile
from neox_launch.machine import Machine
from neox_launch.preemption import PreemptionPolicy
from neox_launch.resources import Node, select_nodes
from neox_launch.spec import (
    LAUNCHERS,
    MPI_LAUNCHERS,
    SINGLE_NODE_LAUNCHERS,
    Launcher,
    LaunchSpec,
    SlurmOptions,
)

log = logging.getLogger(__name__)

DEFAULT_LAUNCHER: Launcher = "pdsh"


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked for, before hostfiles and the machine are read.

    ``num_nodes`` -1 means every node of the hostfile (or of the Slurm job); ``num_gpus`` None
    means every slot (without a hostfile: every visible GPU, else 1). ``launcher_args`` is one
    string, split like a shell would. ``env`` is added to the ``.deepspeed_env`` files' values.
    ``preemption``: which signals ask the workers to save and stop, and how long they get.
    """

    launcher: str = DEFAULT_LAUNCHER
    hostfile: str | None = None
    include: str = ""
    exclude: str = ""
    num_nodes: int = -1
    num_gpus: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    deepspeed_mpi: bool = False
    deepspeed_slurm: bool = False
    launcher_args: str = ""
    no_ssh_check: bool = False
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    env: Mapping[str, str] = field(default_factory=_no_env, hash=False)
    preemption: PreemptionPolicy = field(default_factory=PreemptionPolicy)

    def __post_init__(self) -> None:
        if self.num_gpus is not None and self.num_gpus < 1:
            raise ValueError(f"num_gpus={self.num_gpus} must be at least 1 (workers per node)")
        if self.num_nodes < 1 and self.num_nodes != -1:
            raise ValueError(f"num_nodes={self.num_nodes} must be at least 1, or -1 for all")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @classmethod
    def from_keys(cls, keys: object, **given: Any) -> "LaunchRequest":
        """The request that the launch keys held by ``keys`` (a run config's launch section,
        parsed flags) ask for: each field of the request and of `SlurmOptions` read by its own
        name, a missing one left at its default; ``given`` sets fields directly (``env``,
        ``preemption``, which are not read by name, or a value that replaces the key's)."""
        slurm = {name: getattr(keys, name) for name in SLURM_KEYS if hasattr(keys, name)}
        named = {name: getattr(keys, name) for name in REQUEST_KEYS if hasattr(keys, name)}
        return cls(**{**named, "slurm": SlurmOptions(**slurm), **given})


# The launch keys `LaunchRequest.from_keys` reads by name (a run config has every one of them).
SLURM_KEYS = tuple(f.name for f in fields(SlurmOptions))
REQUEST_KEYS = tuple(
    f.name for f in fields(LaunchRequest) if f.name not in ("slurm", "env", "preemption")
)


def plan(request: LaunchRequest, machine: Machine) -> LaunchSpec:
    """The launch spec for ``request`` on ``machine`` (reads the hostfile and env files)."""
    path = find_hostfile(request.hostfile, machine.environ)
    hosts = read_hostfile(path) if path is not None else None
    launcher = _launcher_for(request, hosts)
    if hosts is None and (request.include or request.exclude):
        hosts = _this_machine(request, launcher, machine)
    nodes = _selected(request, hosts)
    return LaunchSpec(
        nproc_per_node=len(nodes[0].devices) if nodes else _workers(request, machine),
        num_nodes=len(nodes) if nodes else _num_nodes(request, launcher, machine),
        launcher=launcher,
        nodes=_nodes_for(launcher, nodes),
        master_addr=request.master_addr,
        master_port=request.master_port,
        env={**read_env_files([machine.home, machine.cwd]), **request.env},
        launcher_args=_split_args(request.launcher_args),
        ssh_check=not request.no_ssh_check,
        slurm=request.slurm,
        preemption=request.preemption,
    )


def _launcher_for(request: LaunchRequest, hosts: tuple[Host, ...] | None) -> Launcher:
    """The resolved launcher; the default pdsh without a hostfile runs on this machine."""
    launcher = resolve_launcher(request)
    if hosts is not None or launcher != "pdsh":
        return launcher
    if request.num_nodes > 1:
        raise ValueError(
            f"num_nodes={request.num_nodes} needs a hostfile listing the nodes (none given, "
            "no $DLTS_HOSTFILE, no /job/hostfile); give one, or use launcher slurm"
        )
    log.info("no hostfile: starting the workers on this machine (launcher local)")
    return "local"


def _selected(request: LaunchRequest, hosts: tuple[Host, ...] | None) -> tuple[Node, ...]:
    if hosts is None:
        return ()
    return select_nodes(
        hosts,
        include=request.include,
        exclude=request.exclude,
        num_nodes=request.num_nodes,
        num_gpus=request.num_gpus,
    )


def _split_args(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise ValueError(
            f"launcher_args={text!r} cannot be split like a shell would ({error}); fix the quotes"
        ) from None


def resolve_launcher(request: LaunchRequest) -> Launcher:
    """The launcher, after ``deepspeed_mpi`` / ``deepspeed_slurm``."""
    if request.launcher not in LAUNCHERS:
        raise ValueError(f"launcher={request.launcher!r} is not one of: {', '.join(LAUNCHERS)}")
    launcher = cast(Launcher, request.launcher)
    if request.deepspeed_mpi and request.deepspeed_slurm:
        raise ValueError("deepspeed_mpi and deepspeed_slurm are both set; set one of them")
    if request.deepspeed_slurm:
        if launcher not in (DEFAULT_LAUNCHER, "slurm"):
            raise ValueError(
                f"deepspeed_slurm takes the ranks from Slurm, but launcher={launcher!r}; "
                "set launcher to slurm or unset deepspeed_slurm"
            )
        return "slurm"
    if request.deepspeed_mpi:
        if launcher == DEFAULT_LAUNCHER:
            return "openmpi"
        if launcher not in (*MPI_LAUNCHERS, "jsrun"):
            raise ValueError(
                f"deepspeed_mpi takes the ranks from MPI, but launcher={launcher!r}; set "
                f"launcher to one of {', '.join((*MPI_LAUNCHERS, 'jsrun'))} or unset deepspeed_mpi"
            )
    return launcher


def _this_machine(request: LaunchRequest, launcher: str, machine: Machine) -> tuple[Host, ...]:
    """Without a hostfile, include/exclude pick devices of this machine ('localhost:0,1')."""
    if launcher not in SINGLE_NODE_LAUNCHERS:
        raise ValueError(
            f"include/exclude ({request.include or request.exclude!r}) need a hostfile with "
            f"launcher {launcher!r}; give one, or use launcher local"
        )
    return (Host("localhost", machine.gpus() or 1),)


def _nodes_for(launcher: str, nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Single-node launchers need the node only when it restricts the devices."""
    if launcher in SINGLE_NODE_LAUNCHERS and len(nodes) == 1:
        node = nodes[0]
        return nodes if node.devices != tuple(range(len(node.devices))) else ()
    return nodes


def _workers(request: LaunchRequest, machine: Machine) -> int:
    return request.num_gpus or machine.gpus() or 1


def _num_nodes(request: LaunchRequest, launcher: str, machine: Machine) -> int:
    if request.num_nodes != -1:
        return request.num_nodes
    if launcher == "slurm":
        for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
            if machine.environ.get(name, "").isdigit():
                return int(machine.environ[name])
    return 1
