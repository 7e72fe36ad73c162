"""A full disk while preprocessing or caching an index: one line naming the file being written,
exit 2, and no partial output left to be picked up next time. The disk is a small file system
the test mounts (tmpfs, else a loop-mounted ext4 image); where mounting is not permitted the
tests are skipped, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from neox_data import GPTDataset, NoSpaceError, TokenFile, TokenFileWriter

DISK_KB = 128


def _mount_tmpfs(mount: Path) -> str | None:
    """Mount a DISK_KB tmpfs at ``mount``; None, or why it could not."""
    command = ["mount", "-t", "tmpfs", "-o", f"size={DISK_KB}k", "tmpfs", str(mount)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return None if result.returncode == 0 else result.stderr.strip() or "mount failed"


def _mount_ext4_image(mount: Path, image: Path) -> str | None:
    """Mount a loop ext4 image of 1 MB at ``mount`` (ext4's own metadata takes most of it)."""
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 not found"
    with image.open("wb") as handle:
        handle.truncate(1 << 20)
    commands = [
        ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)],
        ["mount", "-o", "loop", str(image), str(mount)],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return result.stderr.strip() or f"{command[0]} failed"
    return None


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a small file system that fills up quickly."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command to make a small file system")
    tmpfs = _mount_tmpfs(mount)
    ext4 = _mount_ext4_image(mount, tmp_path / "disk.img") if tmpfs else None
    if tmpfs and ext4:
        pytest.skip(f"cannot mount a small file system (tmpfs: {tmpfs}; ext4 image: {ext4})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_preprocess_on_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(
    tmp_path: Path, full_disk: Path, tokenizer_path: Path, write_jsonl, make_texts
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in make_texts(6000)])
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    argv += ["--output-prefix", str(full_disk / "c"), "--workers", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "neox_data", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("neox-data:")]
    target = full_disk / "c_text_document.bin"
    assert lines == [f"neox-data: error: no space left on device writing {target}"], result.stderr
    assert "Traceback" not in result.stderr
    assert list(full_disk.iterdir()) in ([], [full_disk / "lost+found"])


def test_an_index_cache_on_a_full_disk_names_the_file_and_leaves_no_part(
    tmp_path: Path, full_disk: Path
) -> None:
    with TokenFileWriter(tmp_path / "corpus", np.uint16) as writer:
        for length in range(1, 400):
            writer.add_document(np.arange(length) % 300)
    tokens = TokenFile(tmp_path / "corpus")
    with pytest.raises(NoSpaceError, match=rf"^no space left on device writing {full_disk}/"):
        GPTDataset(
            tokens, np.arange(len(tokens)), 50_000, seq_length=8, seed=1, cache_dir=full_disk
        )
    assert [p.name for p in full_disk.iterdir() if p.name.endswith((".npy", ".tmp"))] == []
