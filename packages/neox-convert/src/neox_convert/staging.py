"""Output directories that appear whole or not at all, and replace only a previous output.

A conversion writes into a temporary directory beside the destination and renames it into place
when everything is written; any failure removes it, so an output directory is never half-written.

`--overwrite` replaces an existing directory only when the new output has everything in it (the
directory holds a previous output of the same conversion): one that also holds anything else (a
user's notes, training checkpoints, another export's shards) is refused, naming those files, and
left as it was. Keeping them beside the new output is not safe: Hugging Face loads a stale
``model.safetensors`` before a new sharded export's index, and a run directory's older steps
would sit beside an import's ``latest``.

What a conversion writes gets the modes the umask asks for, ``0o777 & ~umask`` for directories
and ``0o666 & ~umask`` for files, so that colleagues can read an export: the staging directory
is made by ``mkdir``, which applies the umask (``tempfile.mkdtemp`` would make it 0700), and
everything written into it takes its mode, files without the execute bits (safetensors writes
them 0600).
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

_LISTED = 5  # foreign files named in a refusal; the rest are counted


def check_destination(output_dir: Path, overwrite: bool, *inputs: Path) -> None:
    """Refuse a non-empty destination without `overwrite`, and one that is or holds an input
    (replacing it would delete the input)."""
    out = output_dir.resolve()
    for source in inputs:
        source = source.resolve()
        if out == source or out in source.parents:
            raise FileExistsError(
                f"{output_dir} overlaps the input {source}; choose another output directory"
            )
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output_dir} exists and is not empty; pass --overwrite to replace a previous "
            "output of this conversion"
        )


@contextmanager
def staged_directory(output_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `output_dir` when the block succeeds
    (refused when `output_dir` holds anything the block did not write again)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.{secrets.token_hex(4)}")
    staging.mkdir()  # with the mode the umask asks for
    try:
        yield staging
        _give_mode(staging)
        _replace(output_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(output_dir: Path, staging: Path) -> None:
    """Rename `staging` to `output_dir`; an existing `output_dir` is set aside first and removed
    once the new one is in place (a crash in between leaves it, hidden, beside)."""
    if not output_dir.exists():
        staging.rename(output_dir)
        return
    _check_nothing_foreign(output_dir, staging)
    old = staging.with_name(f"{staging.name}.replaced")
    output_dir.rename(old)
    try:
        staging.rename(output_dir)
    except BaseException:
        old.rename(output_dir)
        raise
    shutil.rmtree(old)


def _check_nothing_foreign(output_dir: Path, staging: Path) -> None:
    foreign = _entries(output_dir) - _entries(staging)
    if not foreign:
        return
    parents = {str(PurePosixPath(entry).parent) for entry in foreign}
    leaves = sorted(entry for entry in foreign if entry not in parents)
    listing = ", ".join(leaves[:_LISTED])
    if len(leaves) > _LISTED:
        listing += f" and {len(leaves) - _LISTED} more"
    raise FileExistsError(
        f"{output_dir} holds {listing}, which this conversion does not write: --overwrite "
        "replaces only a previous output of the same conversion; move them away or choose "
        "another output directory"
    )


def _give_mode(root: Path) -> None:
    """Give everything under `root` the mode `root` was made with (files without the execute
    bits)."""
    mode = stat.S_IMODE(root.stat().st_mode)
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod(mode if path.is_dir() else mode & 0o666)


def _entries(root: Path) -> set[str]:
    """Every file and directory under `root`, as paths relative to it."""
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}
