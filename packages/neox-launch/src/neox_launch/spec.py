"""The launch spec: how many workers to start, with which launcher, and how they rendezvous."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from neox_launch.preemption import PreemptionPolicy
from neox_launch.resources import Node
from neox_launch.worker import LAUNCH_VARIABLES

Launcher = Literal[
    "local", "pdsh", "openmpi", "mvapich", "mpich", "impi", "slurm", "jsrun", "torchrun"
]
LAUNCHERS: tuple[str, ...] = get_args(Launcher)
# Launchers that start every worker themselves and hand out ranks (the rendezvous shim reads them).
SCHEDULER_LAUNCHERS = ("openmpi", "mvapich", "mpich", "impi", "slurm", "jsrun")
MPI_LAUNCHERS = ("openmpi", "mvapich", "mpich", "impi")
# Launchers that start the workers of this machine only.
SINGLE_NODE_LAUNCHERS = ("local", "torchrun")
# Launchers that can give each node its own device numbers (CUDA_VISIBLE_DEVICES per node).
DEVICE_SUBSET_LAUNCHERS = ("local", "pdsh", "torchrun")
MAX_PORT = 65535
DEFAULT_MASTER_PORT = 29500
LOOPBACK = "127.0.0.1"


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SlurmOptions:
    """``srun`` / ``sbatch`` passthrough: the job comment, the account and the partition."""

    comment: str | None = None
    account: str | None = None
    partition: str | None = None

    def settings(self) -> dict[str, str]:
        """The options that are set, by flag name (``comment``, ``account``, ``partition``)."""
        values = {"comment": self.comment, "account": self.account, "partition": self.partition}
        return {name: value for name, value in values.items() if value}

    def flags(self) -> list[str]:
        """``--comment=...`` and the others, for the options that are set."""
        return [f"--{name}={value}" for name, value in self.settings().items()]


@dataclass(frozen=True)
class LaunchSpec:
    """Start ``nproc_per_node`` workers on each of ``num_nodes`` nodes with ``launcher``.

    ``nodes`` are the hosts in rank order with the device numbers each uses (from a hostfile);
    empty means this machine (local, torchrun) or the nodes the scheduler picks. ``master_addr``
    None means: 127.0.0.1 on one node, else the first node (Slurm: the first node of the job);
    ``master_port`` None picks a free port when the master is this machine, else 29500. ``env``
    is extra environment for every worker (read-only); it may not set the variables the launcher
    sets per worker (RANK, WORLD_SIZE, MASTER_ADDR, ...). ``launcher_args`` go to the launcher
    program as they are; ``ssh_check`` tries SSH to every node before a pdsh launch; ``slurm``
    holds the Slurm-only options; ``preemption`` the signals that ask the workers to save and
    stop, and how long they get.
    """

    nproc_per_node: int
    num_nodes: int = 1
    launcher: Launcher = "local"
    nodes: tuple[Node, ...] = ()
    master_addr: str | None = None
    master_port: int | None = None
    env: Mapping[str, str] = field(default_factory=_no_env, hash=False)
    launcher_args: tuple[str, ...] = ()
    ssh_check: bool = True
    slurm: SlurmOptions = SlurmOptions()
    preemption: PreemptionPolicy = field(default_factory=PreemptionPolicy)

    def __post_init__(self) -> None:
        _check_positive("nproc_per_node", self.nproc_per_node)
        _check_positive("num_nodes", self.num_nodes)
        _check_launcher(self.launcher, self.num_nodes)
        object.__setattr__(self, "nodes", tuple(self.nodes))
        _check_nodes(self)
        _check_master(self.master_addr, self.master_port)
        object.__setattr__(self, "launcher_args", _checked_args(self.launcher_args))
        if self.launcher != "slurm" and self.slurm.flags():
            raise ValueError(
                f"{' '.join(self.slurm.flags())} apply to the slurm launcher only, but launcher="
                f"{self.launcher!r}; remove them or use launcher='slurm'"
            )
        env = dict(self.env)
        _check_env(env)
        object.__setattr__(self, "env", MappingProxyType(env))

    @property
    def world_size(self) -> int:
        """The number of workers over all nodes."""
        return self.nproc_per_node * self.num_nodes

    @property
    def hosts(self) -> tuple[str, ...]:
        """The host names of ``nodes``, in rank order."""
        return tuple(node.host for node in self.nodes)

    @property
    def rendezvous_addr(self) -> str | None:
        """MASTER_ADDR for every worker; None when only the workers can tell (see the class)."""
        if self.master_addr is not None:
            return self.master_addr
        if self.num_nodes == 1:
            return LOOPBACK
        # Slurm orders a job's nodes itself; the rendezvous shim reads the first one.
        return self.nodes[0].host if self.nodes and self.launcher != "slurm" else None

    def visible_devices(self, node_rank: int) -> str | None:
        """CUDA_VISIBLE_DEVICES for the node, or None when it uses its first devices as numbered."""
        if not self.nodes:
            return None
        devices = self.nodes[node_rank].devices
        if devices == tuple(range(len(devices))):
            return None
        return ",".join(map(str, devices))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} must be at least 1")


def _check_launcher(launcher: str, num_nodes: int) -> None:
    if launcher not in LAUNCHERS:
        raise ValueError(
            f"launcher={launcher!r} is not supported; choose one of: {', '.join(LAUNCHERS)}"
        )
    if launcher in SINGLE_NODE_LAUNCHERS and num_nodes != 1:
        raise ValueError(
            f"num_nodes={num_nodes} with launcher={launcher!r}: it starts workers on this machine "
            "only; set num_nodes=1, or use pdsh, an MPI launcher or slurm for several nodes"
        )


def _check_nodes(spec: "LaunchSpec") -> None:
    if spec.launcher == "pdsh" and not spec.nodes:
        raise ValueError("launcher='pdsh' needs the nodes to run on; give a hostfile")
    if not spec.nodes:
        return
    if len(spec.nodes) != spec.num_nodes:
        raise ValueError(f"num_nodes={spec.num_nodes} but {len(spec.nodes)} nodes are given")
    for rank, node in enumerate(spec.nodes):
        if len(node.devices) != spec.nproc_per_node:
            raise ValueError(
                f"node {node.host} has {len(node.devices)} device(s) but nproc_per_node="
                f"{spec.nproc_per_node}; every node runs one worker per device"
            )
        if spec.launcher not in DEVICE_SUBSET_LAUNCHERS and spec.visible_devices(rank):
            raise ValueError(
                f"node {node.host} uses devices {spec.visible_devices(rank)}: picking device "
                f"numbers works with the {', '.join(DEVICE_SUBSET_LAUNCHERS)} launchers only; "
                f"with {spec.launcher!r} select whole hosts (include 'node1@node2')"
            )


def _checked_args(args: Sequence[str]) -> tuple[str, ...]:
    checked = () if isinstance(args, str) else tuple(args)
    if isinstance(args, str) or not all(isinstance(arg, str) for arg in checked):
        raise TypeError(f"launcher_args must be a sequence of str, got {args!r}")
    return checked


def _check_master(addr: str | None, port: int | None) -> None:
    if addr is not None and (
        not isinstance(addr, str) or not addr or any(c.isspace() for c in addr)
    ):
        raise ValueError(f"master_addr={addr!r} must be a host name or IP address")
    if port is None:
        return
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"master_port must be an int or None, got {port!r}")
    if not 1 <= port <= MAX_PORT:
        raise ValueError(
            f"master_port={port} is outside 1..{MAX_PORT}; pass a valid port, "
            "or leave it unset to pick a free one"
        )


def _check_env(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"env must map str to str, got {name!r}: {value!r}")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"env has an invalid variable {name!r}={value!r}")
        if name in LAUNCH_VARIABLES:
            raise ValueError(
                f"env sets {name}, which the launcher sets for each worker; remove it from env "
                "(use master_addr / master_port for MASTER_ADDR / MASTER_PORT)"
            )
