"""The machine a launch starts from: its environment, directory, Python, user and CPUs.

Runners build their commands from a ``Machine`` value rather than reading the process state, so
the same spec gives the same commands in a test.
"""

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from neox_launch.devices import count_local_gpus

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Machine:
    """Facts about the launching machine; ``gpu_count`` None counts the GPUs when asked."""

    environ: Mapping[str, str] = field(hash=False)
    cwd: str
    python: str
    home: str
    hostname: str
    is_root: bool = False
    cpu_count: int = 1
    gpu_count: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "environ", MappingProxyType(dict(self.environ)))

    @classmethod
    def current(cls) -> "Machine":
        """This process's machine."""
        return cls(
            environ=dict(os.environ),
            cwd=os.getcwd(),
            python=sys.executable,
            home=str(Path.home()),
            hostname=socket.gethostname(),
            is_root=os.geteuid() == 0,
            cpu_count=os.cpu_count() or 1,
        )

    def gpus(self) -> int:
        """The GPUs a worker on this machine may use (see ``count_local_gpus``)."""
        if self.gpu_count is not None:
            return self.gpu_count
        return count_local_gpus(self.environ)

    def is_local(self, host: str) -> bool:
        """Whether ``host`` names this machine (loopback, or this machine's host name)."""
        short = self.hostname.split(".", 1)[0]
        return host in _LOOPBACK_NAMES or host in (self.hostname, short)
