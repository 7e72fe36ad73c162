"""The launcher programs (mpirun, srun, pdsh, ...): found on PATH, or a clear error saying
what to install.

Debian installs several MPI implementations side by side (``mpirun`` is whichever the
alternatives system picked; ``mpirun.openmpi`` and ``mpirun.mpich`` name each one), so the MPI
launchers check ``--version`` to take the implementation they were asked for.
"""

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neox_launch.supervisor import WorkerStartError

log = logging.getLogger(__name__)

_QUERY_TIMEOUT = 30.0  # seconds a program gets to say its version or list its devices


class ProgramNotFoundError(WorkerStartError):
    """The launcher program is not installed (or not on PATH)."""


@dataclass(frozen=True)
class Program:
    """A launcher program: the names to look for, in order, and how to get it.

    ``markers``: text one of which ``NAME --version`` prints for the right implementation
    (empty: any program of that name will do).
    """

    names: tuple[str, ...]
    install: str
    markers: tuple[str, ...] = ()


_NOT_DEBIAN = "(Debian does not package it)"
PROGRAMS: Mapping[str, Program] = {
    "pdsh": Program(("pdsh",), "the Debian package pdsh (apt-get install pdsh)"),
    "openmpi": Program(
        ("mpirun", "mpirun.openmpi"),
        "Open MPI: the Debian package openmpi-bin (apt-get install openmpi-bin)",
        ("Open MPI", "OpenRTE"),
    ),
    "mpich": Program(
        ("mpirun", "mpirun.mpich", "mpiexec.hydra"),
        "MPICH: the Debian package mpich (apt-get install mpich)",
        ("HYDRA",),
    ),
    "mvapich": Program(
        ("mpirun", "mpiexec.hydra"),
        f"MVAPICH2 from https://mvapich.cse.ohio-state.edu {_NOT_DEBIAN}",
        ("HYDRA", "MVAPICH"),
    ),
    "impi": Program(
        ("mpirun", "mpiexec.hydra"),
        f"Intel MPI (Intel oneAPI HPC Toolkit) {_NOT_DEBIAN}",
        ("Intel(R) MPI",),
    ),
    "slurm": Program(("srun",), "the Debian package slurm-client (apt-get install slurm-client)"),
    "sbatch": Program(
        ("sbatch",), "the Debian package slurm-client (apt-get install slurm-client)"
    ),
    "jsrun": Program(("jsrun",), f"IBM Spectrum LSF with jsrun {_NOT_DEBIAN}"),
    "torchrun": Program(("torchrun",), "PyTorch in this environment (pip install torch)"),
}


def find_program(launcher: str, environ: Mapping[str, str], python: str | None = None) -> str:
    """The full path of ``launcher``'s program on ``environ``'s PATH, then beside ``python``
    (a venv's torchrun when the venv is not activated).

    Raises ProgramNotFoundError naming what to install when there is none (or none of the right
    implementation).
    """
    program = PROGRAMS[launcher]
    folders = [environ.get("PATH", ""), os.path.dirname(python) if python else ""]
    search = os.pathsep.join(folder for folder in folders if folder)
    found = [path for name in program.names if (path := shutil.which(name, path=search))]
    for path in dict.fromkeys(found):
        if not program.markers or _is_implementation(path, program.markers):
            return path
    if found:
        raise ProgramNotFoundError(
            f"launcher {launcher!r}: found {', '.join(dict.fromkeys(found))}, but --version "
            f"does not mention {' or '.join(program.markers)} (another implementation); "
            f"install {program.install}, or put its bin directory first on PATH"
        )
    raise ProgramNotFoundError(
        f"launcher {launcher!r} needs {' or '.join(program.names)}, which is not on PATH; "
        f"install {program.install}, or choose another launcher"
    )


def _is_implementation(path: str, markers: tuple[str, ...]) -> bool:
    try:
        result = query([path, "--version"])
    except OSError as error:
        log.debug("cannot run %s --version: %s", path, error)
        return False
    return any(marker in result.stdout + result.stderr for marker in markers)


def query(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a program for what it prints (its version, its devices), without input; an OSError
    when it cannot run or does not answer within 30 seconds."""
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=_QUERY_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise OSError(str(error)) from error
