"""The launch spec: how many workers to start, with which launcher, and how they rendezvous."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from neox_launch.worker import LAUNCH_VARIABLES

Launcher = Literal["local"]
LAUNCHERS: tuple[str, ...] = get_args(Launcher)
MAX_PORT = 65535


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class LaunchSpec:
    """Start ``nproc_per_node`` workers on each of ``num_nodes`` nodes with ``launcher``.

    ``master_port=None`` picks a free TCP port on ``master_addr`` at launch time. ``env`` is extra
    environment for every worker (stored as a read-only mapping); it may not set the variables the
    launcher sets per worker (RANK, WORLD_SIZE, MASTER_ADDR, ...).
    """

    nproc_per_node: int
    num_nodes: int = 1
    launcher: Launcher = "local"
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    env: Mapping[str, str] = field(default_factory=_no_env, hash=False)

    def __post_init__(self) -> None:
        _check_positive("nproc_per_node", self.nproc_per_node)
        _check_positive("num_nodes", self.num_nodes)
        _check_launcher(self.launcher, self.num_nodes)
        _check_master(self.master_addr, self.master_port)
        env = dict(self.env)
        _check_env(env)
        object.__setattr__(self, "env", MappingProxyType(env))

    @property
    def world_size(self) -> int:
        """The number of workers over all nodes."""
        return self.nproc_per_node * self.num_nodes


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} must be at least 1")


def _check_launcher(launcher: str, num_nodes: int) -> None:
    match launcher:
        case "local":
            if num_nodes != 1:
                raise ValueError(
                    f"num_nodes={num_nodes} with launcher='local': the local launcher starts "
                    "workers on this machine only; set num_nodes=1"
                )
        case _:
            raise ValueError(
                f"launcher={launcher!r} is not supported; choose one of: {', '.join(LAUNCHERS)}"
            )


def _check_master(addr: str, port: int | None) -> None:
    if not isinstance(addr, str) or not addr or any(c.isspace() for c in addr):
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
