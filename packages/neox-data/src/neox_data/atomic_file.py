"""Files written whole under a hidden temporary name, then renamed into place.

The temporary file is created beside its destination (same file system, so the rename is
atomic) with the permissions a file created in place would get, ``0o666 & ~umask``:
``tempfile.mkstemp`` makes them 0600, which colleagues on a shared cluster cannot read. A full
disk or quota while writing is a `NoSpaceError` that names the destination, not the temporary.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FULL_DISK = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class NoSpaceError(OSError):
    """The disk (or the user's quota) filled up while writing ``path``."""

    def __init__(self, path: str | Path, code: int = errno.ENOSPC) -> None:
        super().__init__(f"{_FULL_DISK[code]} writing {path}")
        self.errno = code
        self.path = Path(path)


def is_full_disk(err: OSError) -> bool:
    return err.errno in _FULL_DISK


@contextmanager
def reporting_full_disk(path: str | Path) -> Iterator[None]:
    """Turn a full disk or quota in the block into a `NoSpaceError` naming ``path``."""
    try:
        yield
    except OSError as err:
        if isinstance(err, NoSpaceError) or err.errno is None or not is_full_disk(err):
            raise
        raise NoSpaceError(path, err.errno) from err


def umask() -> int:
    """The process's umask, read from /proc without changing it (setting and restoring it, the
    only other way, races with threads creating files); elsewhere it is set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_file(target: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty file ``.NAME.XXXXXXXX{suffix}`` beside ``target`` (NAME: its name), with the
    mode a file created in place would get."""
    target = Path(target)
    with reporting_full_disk(target):
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(name)


@contextmanager
def replacing(target: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write ``target``'s new contents to: renamed to ``target`` when the
    block succeeds, removed when it fails. A full disk is a `NoSpaceError` naming ``target``."""
    temp = temporary_file(target, suffix)
    try:
        with reporting_full_disk(target):
            yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
