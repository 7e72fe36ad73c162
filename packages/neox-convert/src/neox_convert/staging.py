"""Output directories that appear whole or not at all.

A conversion writes into a temporary directory beside the destination and renames it into place
when everything is written; any failure removes it, so an output directory is never half-written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
        raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite")


@contextmanager
def staged_directory(output_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `output_dir` when the block succeeds."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        yield staging
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
