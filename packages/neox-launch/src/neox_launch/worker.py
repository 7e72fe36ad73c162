"""A worker command: the argv and environment of one worker process, as a runner builds it."""

import shlex
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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


def default_omp_threads(local_world_size: int, cpu_count: int) -> int:
    """OMP_NUM_THREADS for a worker when unset: the node's CPUs shared out, at least one."""
    return max(1, cpu_count // max(1, local_world_size))


@dataclass(frozen=True)
class WorkerCommand:
    """One process to start: a worker (its global rank), or a launcher program that starts them.

    ``env`` is the whole environment of the process (not a delta), stored read-only. ``label``
    names the process in messages (default ``worker RANK``). ``interrupt_signal`` is what the
    supervisor sends it in place of SIGINT (pdsh takes one SIGINT as a status request);
    ``preemption_signal``, when set, what it sends in place of any signal that asks the job to
    save and stop (srun and mpirun kill their ranks on SIGTERM, but pass SIGUSR1 on).
    ``zero_after_signal_is_success``: whether its exit code 0 after such a signal means that
    every rank finished (Hydra's mpiexec now and then reports 0 for ranks the signal stopped).
    """

    rank: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)
    label: str = ""
    interrupt_signal: int = signal.SIGINT
    preemption_signal: int | None = None
    zero_after_signal_is_success: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @property
    def name(self) -> str:
        """How messages name the process."""
        return self.label or f"worker {self.rank}"

    def signal_for(self, signum: int, *, preempting: bool = False) -> int:
        """The signal the supervisor sends this process for ``signum``."""
        if preempting and self.preemption_signal is not None:
            return self.preemption_signal
        return self.interrupt_signal if signum == signal.SIGINT else signum

    def with_program(self, program: str) -> "WorkerCommand":
        """The same command with ``argv[0]`` replaced (by the program's full path)."""
        return replace(self, argv=(program, *self.argv[1:]))

    def shell_line(self, names: Iterable[str]) -> str:
        """One shell line: ``NAME=value`` for each of ``names`` that env sets, then argv."""
        assignments = [
            f"{name}={shlex.quote(self.env[name])}" for name in names if name in self.env
        ]
        return " ".join([*assignments, shlex.join(self.argv)])
