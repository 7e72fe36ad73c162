"""The checkpoint format's names and its two write rules, in one place.

    RUN/latest               "global_step{N}": the newest complete step, written last
    RUN/global_step{N}/      one step: .neox_save (written first: a step neox-train writes),
                             DeepSpeed's files, neox's metadata (model.json,
                             layout.json, config.yml, neox_state.json, tokenizer files) and,
                             written after every other file of the step, files.json (the name,
                             size and checksum of each file: `neox_model.checkpoint.integrity`)

Write rules: a file appears whole or not at all (written under a temporary name in the same
directory, flushed, then renamed), with the permissions the umask gives (`open`'s 0o666 & ~umask;
`tempfile.mkstemp` would make it 0600); and a full disk is one line naming the path.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

LATEST = "latest"  # in a run directory: the name of the newest complete step directory
MANIFEST = "model.json"  # the architecture and which file holds which weights
LAYOUT_FILE = "layout.json"  # the parallel layout and where each rank's state went
FILES = "files.json"  # every file of the step with its size and checksum; written last
RUN_CONFIG = "config.yml"  # the resolved run config, GPT-NeoX-style YAML
STATE_FILE = "neox_state.json"  # the iteration, consumed samples and LR schedule
CONSOLIDATED = "consolidated_model_states.pt"  # ZeRO-3: the gathered weights, by neox
SAVING = ".neox_save"  # written first into a step directory neox-train saves (not a record)
STEP_DIR = re.compile(r"global_step(\d+)$")
# DeepSpeed's names for the model files of a step: one per tensor-parallel rank, or with a
# pipeline one per layer and rank; neox checkpoints keep them so that DeepSpeed loads them
MODEL_FILE = re.compile(r"mp_rank_(\d+)_model_states\.pt$")
LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used as asked: missing, incomplete, damaged, unsafe, or a
    disk that cannot hold it. The message is one line saying what and where."""


class NoCheckpoint(CheckpointError):
    """The path names no checkpoint (or no complete one)."""


class CorruptCheckpoint(CheckpointError):
    """A step whose files do not match what its save recorded, or cannot be read back."""


class UnsafeCheckpoint(CheckpointError):
    """A file that would run code when unpickled (a foreign or planted pickle)."""


class DiskFull(CheckpointError):
    """No space left on the device while writing a checkpoint or its metadata."""


def step_tag(iteration: int) -> str:
    return f"global_step{iteration}"


def step_number(path: Path) -> int | None:
    """N of a `global_stepN` directory name; None for other names."""
    match = STEP_DIR.match(path.name)
    return int(match[1]) if match else None


def step_dirs(run_dir: Path) -> list[Path]:
    """Every `global_stepN` directory of a run directory, complete or not, oldest first."""
    if not run_dir.is_dir():
        return []
    steps = [(n, p) for p in run_dir.iterdir() if (n := step_number(p)) is not None and p.is_dir()]
    return [p for _, p in sorted(steps)]


def model_file_name(tp_rank: int) -> str:
    return f"mp_rank_{tp_rank:02d}_model_states.pt"


def layer_file_name(layer: int, tp_rank: int) -> str:
    return f"layer_{layer:02d}-model_{tp_rank:02d}-model_states.pt"


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` whole or not at all, with the permissions the umask gives."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(err, path)
        raise
    return path


def write_latest(run_dir: str | Path, step_dir: Path) -> Path:
    """Point `latest` at `step_dir` (after its files.json was written)."""
    return write_atomic(Path(run_dir) / LATEST, step_dir.name + "\n")


def is_disk_full(err: BaseException, path: str | Path) -> bool:
    """Whether `err`, met writing under `path`, comes from a full disk: ENOSPC / EDQUOT, or an
    error torch's zip writer raises without the errno ("unexpected pos ...") on a file system
    left with less than 1 MiB."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    return isinstance(err, OSError | RuntimeError) and _free_bytes(Path(path)) < _ALMOST_FULL


_ALMOST_FULL = 1 << 20


def _free_bytes(path: Path) -> int:
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return _ALMOST_FULL


def raise_if_disk_full(err: BaseException, path: str | Path) -> None:
    """Raise `DiskFull` naming `path` when `err` says the disk is full (else return)."""
    if is_disk_full(err, path):
        raise DiskFull(
            f"no space left on device writing {path}: free space there (or choose another "
            "directory) and start again"
        ) from err
