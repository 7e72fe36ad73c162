"""One run at a time per `save` directory.

Rank 0 holds an exclusive `flock` on SAVE/.neox_run.lock for as long as it lives, and writes into
it where every rank of the run is (host and pid). The operating system drops the lock when the
process ends, however it ends, so there is nothing to clean up after a crash. A second start on
the same directory while workers of the first are still alive (e.g. after the launcher was killed)
is refused with one line naming them, instead of two runs writing the same steps.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from neox_model.checkpoint import CheckpointError
from neox_train.config.schema import SaidOnRankZero

LOCK_FILE = ".neox_run.lock"


class SaveDirInUse(CheckpointError):
    """Another run's workers still hold the save directory."""


@dataclass
class RunLock:
    """The open, locked file; closing it (or the process ending) releases the lock."""

    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def lock_save_dir(save: str | None) -> RunLock | None:
    """Rank 0 locks `save` and records every rank's host and pid in the lock file; the other
    ranks get the same SaveDirInUse when it is held (collective)."""
    if save is None:
        return None
    box: list[Any] = [None]
    lock = None
    if dist.get_rank() == 0:
        try:
            lock = _acquire(Path(save))
        except SaveDirInUse as err:
            box[0] = str(err)
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise SaveDirInUse(box[0]) if dist.get_rank() == 0 else SaidOnRankZero(box[0])
    here = (socket.gethostname(), os.getpid())
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, here)
    if lock is not None:
        _describe(lock, ranks)
    return lock


def _acquire(save_dir: Path) -> RunLock:
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            os.close(fd)
            raise
        holders = _holders(path)
        os.close(fd)
        raise SaveDirInUse(
            f"{save_dir} is in use by another run ({holders}): stop it first, or give this run "
            "another `save`"
        ) from err
    return RunLock(path, fd)


def _describe(lock: RunLock, ranks: list[tuple[str, int]]) -> None:
    body = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ranks": [{"host": host, "pid": pid} for host, pid in ranks],
    }
    os.ftruncate(lock.fd, 0)
    os.pwrite(lock.fd, (json.dumps(body) + "\n").encode(), 0)


def _holders(path: Path) -> str:
    """'pids 12, 13 on node1, started ...' from the lock file, as far as it can be read."""
    try:
        body = json.loads(path.read_text())
        ranks = body["ranks"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its workers are still starting"
    hosts: dict[str, list[str]] = {}
    for rank in ranks:
        hosts.setdefault(str(rank["host"]), []).append(str(rank["pid"]))
    where = "; ".join(f"pids {', '.join(pids)} on {host}" for host, pids in hosts.items())
    return f"{where}, started {body.get('started', '?')}"
