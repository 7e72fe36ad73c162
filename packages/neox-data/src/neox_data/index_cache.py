"""Index arrays cached as ``.npy`` files, built once however many processes ask at the same time.

A cache entry is a set of arrays saved as ``{stem}_{name}.npy``. The first process to find an
entry missing takes an exclusive lock on ``{stem}.lock`` (``flock``, released by the kernel
if the process dies), checks again, builds the arrays and writes each under a temporary name
before renaming it into place; the others block on the lock, then load what it wrote. Loaded
arrays are memory-mapped read-only. Where the directory cannot be written, the arrays are built
in memory (each process for itself) and a warning says so. A full disk while writing is a
`neox_data.NoSpaceError` naming the file, and leaves no part of it.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from neox_data.atomic_file import replacing

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class CacheSource(enum.Enum):
    """Where a process got its index arrays from."""

    BUILT = "built"  # built here and written to the cache
    LOADED = "loaded"  # read from files another process (or an earlier run) wrote
    MEMORY = "memory"  # built here, not cached (caching off, or the directory is read-only)


def cache_paths(stem: Path, names: Sequence[str]) -> dict[str, Path]:
    return {name: Path(f"{stem}_{name}.npy") for name in names}


def load_or_build(
    stem: Path, names: Sequence[str], build: Callable[[], Mapping[str, np.ndarray]]
) -> tuple[Arrays, CacheSource]:
    """The arrays ``names`` of cache entry ``stem``, built with ``build()`` if missing."""
    paths = cache_paths(stem, names)
    if all(path.is_file() for path in paths.values()):
        return _load(paths), CacheSource.LOADED
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(f"{stem}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        logger.warning("cannot cache index files at %s (%s); building them in memory", stem, err)
        return _checked(build(), names), CacheSource.MEMORY
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process builds
        if all(path.is_file() for path in paths.values()):
            return _load(paths), CacheSource.LOADED
        start = time.perf_counter()
        arrays = _checked(build(), names)
        _save_all(paths, arrays)
        logger.info("built %s in %.1f s", stem.name, time.perf_counter() - start)
        return _load(paths), CacheSource.BUILT
    finally:
        os.close(lock)  # closing releases the lock


def _checked(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> Arrays:
    assert set(arrays) == set(names), (sorted(arrays), sorted(names))
    return dict(arrays)


def _load(paths: Mapping[str, Path]) -> Arrays:
    arrays: Arrays = {}
    for name, path in paths.items():
        try:
            # A plain ndarray view of the map: indexing np.memmap itself is several times slower.
            arrays[name] = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError) as err:
            raise ValueError(
                f"{path}: unreadable index cache file ({err}); delete it to have it rebuilt"
            ) from err
    return arrays


def _save_all(paths: Mapping[str, Path], arrays: Arrays) -> None:
    """Write every array of an entry, or none: an entry missing a file is built again."""
    try:
        for name, path in paths.items():
            _save_atomically(path, arrays[name])
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise


def _save_atomically(path: Path, array: np.ndarray) -> None:
    with replacing(path) as temp, temp.open("wb") as handle:
        np.save(_PythonWrites(handle), array, allow_pickle=False)


class _PythonWrites:
    """A file numpy writes through its ``write`` method. numpy writes a real file with C's
    fwrite and reports a full disk as "N requested and M written", without the errno that
    `replacing` needs to say so."""

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write
