"""The rendezvous shim: ``python -m neox_launch.rendezvous [options] -- command [args...]``.

A scheduler (mpirun, srun, jsrun) starts this once per rank. It reads the rank the scheduler
gave it (``OMPI_COMM_WORLD_*``, ``MV2_COMM_WORLD_*``, ``PMI_*`` with ``MPI_LOCALRANKID``,
``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS``, ``JSM_NAMESPACE_*``), sets RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (and OMP_NUM_THREADS when unset), and
runs the command with them. The command dies with the shim (Linux parent-death signal);
SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are passed on to it. A command that fails is
reported with its rank, and the shim exits as the command did; a command stopped by a signal
passed on gives exit code 1 (the lowest failure), so that srun, which returns the highest code
of its tasks, returns the code of the rank that failed; one that saved and stopped gives 75
(see ``preemption``). Under Hydra (MPICH, MVAPICH2, Intel MPI) the shim also speaks PMI so
that a failing rank stops the job (see ``pmi``).
"""

import argparse
import fcntl
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import NoReturn, TextIO

from neox_launch.parent_death import die_with_parent
from neox_launch.pmi import PmiLink, without_link
from neox_launch.preemption import PREEMPTED
from neox_launch.ranks import (
    HYDRA_SCHEDULERS,
    SCHEDULERS,
    SHIM_MODULE,
    Place,
    RendezvousError,
    detect_scheduler,
    find_place,
    master_address,
    rank_env,
)
from neox_launch.spec import DEFAULT_MASTER_PORT
from neox_launch.supervisor import exit_description

PROG = SHIM_MODULE
_PASSED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
STOPPED_EXIT_CODE = 1
# How long a failing rank waits for its report to be read before it aborts the job over PMI.
DRAIN_TIMEOUT = 5.0


class _Forwarder:
    """Passes the signals this process receives on to the child; remembers the last one."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.received: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.child.poll() is None:
            self.child.send_signal(signum)


def run(
    command: Sequence[str], env: Mapping[str, str], place: Place, link: PmiLink | None = None
) -> int:
    """Run ``command`` with ``env`` until it ends; its exit code (re-raising a fatal signal).

    With a PMI ``link``, a success is reported as finalize and a failure as abort (so Hydra
    stops the other ranks).
    """
    try:
        child = subprocess.Popen(
            list(command), env=dict(env), preexec_fn=die_with_parent(os.getpid())
        )
    except OSError as error:
        _fail(f"cannot start {command[0]!r}: {error.strerror or error}")
    forwarder = _Forwarder(child)
    for signum in _PASSED_SIGNALS:
        signal.signal(signum, forwarder)
    returncode = child.wait()
    stopped = forwarder.received is not None
    if returncode != 0 and not stopped:
        print(
            f"{PROG}: rank {place.rank} (local rank {place.local_rank} on "
            f"{socket.gethostname()}) {exit_description(returncode)}",
            file=sys.stderr,
            flush=True,
        )
    if link is not None and returncode in (0, PREEMPTED):  # saved and stopped: not a failure
        link.finalize()
    elif link is not None and not stopped:
        # Hydra's proxy stops relaying a rank's output once the job aborts: the line naming
        # the failing rank would be lost if the abort overtook it.
        wait_until_read((sys.stdout, sys.stderr), DRAIN_TIMEOUT)
        link.abort(returncode if returncode > 0 else 128 - returncode)
    if returncode not in (0, PREEMPTED) and stopped:
        # Not the cause: srun reports the highest code of its tasks, and should report the
        # code of the rank that failed.
        return STOPPED_EXIT_CODE
    if returncode < 0:
        _die_by(-returncode)
    return returncode


def unread_bytes(fd: int) -> int:
    """Bytes written to the pipe ``fd`` and not yet read; 0 when ``fd`` is not a pipe."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        packed = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    except OSError:
        return 0
    return int(struct.unpack("i", packed)[0])


def wait_until_read(streams: Sequence[TextIO], timeout: float) -> bool:
    """Flush ``streams`` and wait, at most ``timeout`` seconds, until the reader of each one
    that is a pipe has read what is in it; whether it did."""
    fds = []
    for stream in streams:
        try:
            stream.flush()
            fds.append(stream.fileno())
        except (OSError, ValueError):  # closed, or not backed by a file descriptor
            continue
    deadline = time.monotonic() + timeout
    while any(unread_bytes(fd) for fd in fds):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _die_by(signum: int) -> None:
    """End this process by ``signum`` so the scheduler sees what the command saw."""
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be caught anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        usage="%(prog)s [options] -- command [args...]",
        description="Run a command as one rank of a job a scheduler started, with RANK, "
        "LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set from the "
        "scheduler's variables.",
    )
    parser.add_argument("--scheduler", choices=("auto", *SCHEDULERS), default="auto")
    parser.add_argument("--master-addr", help="host of rank 0 (default: see the module doc)")
    parser.add_argument("--master-port", type=int, help=f"default {DEFAULT_MASTER_PORT}")
    parser.add_argument("--nproc-per-node", type=int, help="ranks per node, when not published")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Translate the scheduler's variables and run the command; its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    options, command = _parser().parse_args(args[:cut]), args[cut + 1 :]
    if not command:
        _fail("no command given; put it after '--'")
    try:
        scheduler = options.scheduler
        if scheduler == "auto":
            scheduler = detect_scheduler(os.environ)
        place = find_place(os.environ, scheduler, options.nproc_per_node)
        address = master_address(place, os.environ, options.master_addr)
    except (RendezvousError, ValueError) as error:
        _fail(str(error))
    port = options.master_port or DEFAULT_MASTER_PORT
    added = rank_env(place, os.environ, address, port, os.cpu_count() or 1)
    link = PmiLink.open(os.environ) if scheduler in HYDRA_SCHEDULERS else None
    return run(command, {**without_link(os.environ), **added}, place, link)


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
