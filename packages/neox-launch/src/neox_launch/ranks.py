"""Where a process sits in a job its scheduler started: the scheduler's rank variables read and
turned into the launch variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT). The rendezvous shim (``python -m neox_launch.rendezvous``) applies them;
``shim_argv`` is how runners call it.

Variables read: ``OMPI_COMM_WORLD_*`` (Open MPI), ``MV2_COMM_WORLD_*`` (MVAPICH2), ``PMI_RANK`` /
``PMI_SIZE`` with ``MPI_LOCALRANKID`` / ``MPI_LOCALNRANKS`` (Hydra: MPICH, Intel MPI),
``SLURM_PROCID`` / ``SLURM_LOCALID`` / ``SLURM_NTASKS`` (srun), ``JSM_NAMESPACE_*`` (jsrun).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neox_launch.nodelist import expand_nodelist
from neox_launch.spec import LOOPBACK
from neox_launch.worker import default_omp_threads

SHIM_MODULE = "neox_launch.rendezvous"
SCHEDULERS = ("openmpi", "mvapich", "mpich", "impi", "slurm", "jsrun")
HYDRA_SCHEDULERS = ("mvapich", "mpich", "impi")
# The first scheduler whose rank variable is set wins. Slurm comes last: an MPI job started
# inside a Slurm allocation also inherits SLURM_PROCID (of the batch step).
DETECTION_ORDER = ("openmpi", "mvapich", "jsrun", "mpich", "slurm")


class RendezvousError(RuntimeError):
    """The scheduler's variables are missing or inconsistent."""


@dataclass(frozen=True)
class RankVariables:
    """The names under which one scheduler publishes a process's place in the job."""

    rank: str
    size: str
    local_rank: str | None
    local_size: str | None


_HYDRA = RankVariables("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")
VARIABLES: Mapping[str, RankVariables] = {
    "openmpi": RankVariables(
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    "mvapich": RankVariables(
        "MV2_COMM_WORLD_RANK",
        "MV2_COMM_WORLD_SIZE",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "MV2_COMM_WORLD_LOCAL_SIZE",
    ),
    "mpich": _HYDRA,
    "impi": _HYDRA,
    "slurm": RankVariables("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None),
    "jsrun": RankVariables(
        "JSM_NAMESPACE_RANK",
        "JSM_NAMESPACE_SIZE",
        "JSM_NAMESPACE_LOCAL_RANK",
        "JSM_NAMESPACE_LOCAL_SIZE",
    ),
}


@dataclass(frozen=True)
class Place:
    """A process's place in the job, as its scheduler tells it."""

    scheduler: str
    rank: int
    size: int
    local_rank: int
    local_size: int


def detect_scheduler(environ: Mapping[str, str]) -> str:
    """The scheduler that started this process, from the variables it set."""
    for scheduler in DETECTION_ORDER:
        if VARIABLES[scheduler].rank in environ:
            return scheduler
    names = ", ".join(VARIABLES[scheduler].rank for scheduler in DETECTION_ORDER)
    raise RendezvousError(
        f"no scheduler rank variable is set (looked for {names}); start this under mpirun, "
        "srun or jsrun, or name the scheduler with --scheduler"
    )


def find_place(
    environ: Mapping[str, str], scheduler: str, nproc_per_node: int | None = None
) -> Place:
    """Rank, world size, local rank and local size; ``nproc_per_node`` fills in a local rank or
    size the scheduler does not publish (ranks placed node by node)."""
    names = VARIABLES[scheduler]
    rank = _number(environ, names.rank, scheduler)
    size = _number(environ, names.size, scheduler)
    if names.local_rank and names.local_rank in environ:
        local_rank = _number(environ, names.local_rank, scheduler)
    elif nproc_per_node is not None:
        local_rank = rank % nproc_per_node
    else:
        raise RendezvousError(
            f"{names.local_rank or 'no local rank variable'} is not set by {scheduler}; "
            "pass --nproc-per-node"
        )
    local_size = _local_size(environ, names, scheduler, nproc_per_node)
    if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise RendezvousError(
            f"inconsistent {scheduler} variables: rank {rank} of {size}, "
            f"local rank {local_rank} of {local_size}"
        )
    return Place(scheduler, rank, size, local_rank, local_size)


def _local_size(
    environ: Mapping[str, str], names: RankVariables, scheduler: str, nproc: int | None
) -> int:
    if names.local_size and names.local_size in environ:
        return _number(environ, names.local_size, scheduler)
    if scheduler == "slurm" and "SLURM_NODEID" in environ:
        return slurm_tasks_on_node(environ)
    if nproc is not None:
        return nproc
    raise RendezvousError(
        f"{names.local_size or 'no local size variable'} is not set by {scheduler}; "
        "pass --nproc-per-node"
    )


def slurm_tasks_on_node(environ: Mapping[str, str]) -> int:
    """This node's task count, from SLURM_STEP_TASKS_PER_NODE (``2(x3),1``) and SLURM_NODEID."""
    value = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    counts: list[int] = []
    for item in value.split(","):
        count, _, repeat = item.partition("(x")
        if not count.isdigit() or (repeat and not repeat.rstrip(")").isdigit()):
            raise RendezvousError(f"cannot read SLURM_STEP_TASKS_PER_NODE={value!r}")
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    node = _number(environ, "SLURM_NODEID", "slurm")
    if node >= len(counts):
        raise RendezvousError(f"SLURM_NODEID={node} but SLURM_STEP_TASKS_PER_NODE={value!r}")
    return counts[node]


def _number(environ: Mapping[str, str], name: str, scheduler: str) -> int:
    value = environ.get(name)
    if value is None:
        raise RendezvousError(
            f"{name} is not set: this command must be started by {scheduler}'s launcher "
            "(or pass the right --scheduler)"
        )
    if not value.strip().isdigit():
        raise RendezvousError(f"{name}={value!r} is not a non-negative integer")
    return int(value)


def master_address(place: Place, environ: Mapping[str, str], given: str | None) -> str:
    """``given``, else 127.0.0.1 on one node, else the first node of the Slurm job."""
    if given:
        return given
    if place.size == place.local_size:
        return LOOPBACK
    for name in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        if environ.get(name):
            return expand_nodelist(environ[name])[0]
    raise RendezvousError(
        f"cannot tell the master address of a {place.size}-rank job on several nodes; "
        "pass --master-addr (the host of rank 0)"
    )


def rank_env(
    place: Place, environ: Mapping[str, str], master_addr: str, master_port: int, cpus: int
) -> dict[str, str]:
    """The variables to add for the command: the launch variables, and OMP_NUM_THREADS."""
    env = {
        "RANK": str(place.rank),
        "LOCAL_RANK": str(place.local_rank),
        "WORLD_SIZE": str(place.size),
        "LOCAL_WORLD_SIZE": str(place.local_size),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }
    if "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = str(default_omp_threads(place.local_size, cpus))
    return env


def shim_argv(
    python: str,
    scheduler: str,
    command: Sequence[str],
    *,
    master_addr: str | None,
    master_port: int | None,
    nproc_per_node: int,
) -> list[str]:
    """The argv that runs ``command`` through this shim (what runners put after their flags)."""
    argv = [
        python,
        "-m",
        SHIM_MODULE,
        "--scheduler",
        scheduler,
        "--nproc-per-node",
        str(nproc_per_node),
    ]
    if master_addr is not None:
        argv += ["--master-addr", master_addr]
    if master_port is not None:
        argv += ["--master-port", str(master_port)]
    return [*argv, "--", *command]
