"""A worker command: the argv and environment of one worker process, as a runner builds it."""

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The variables a runner sets for every worker; torch.distributed's env:// rendezvous reads them.
LAUNCH_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


@dataclass(frozen=True)
class WorkerCommand:
    """One worker process to start: its global rank, argv and complete environment.

    ``env`` is the whole environment of the process (not a delta), stored read-only.
    """

    rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def shell_line(self, names: Iterable[str]) -> str:
        """One shell line: ``NAME=value`` for each of ``names`` that env sets, then argv."""
        assignments = [
            f"{name}={shlex.quote(self.env[name])}" for name in names if name in self.env
        ]
        return " ".join([*assignments, shlex.join(self.argv)])
