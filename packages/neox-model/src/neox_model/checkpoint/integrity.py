"""What makes a step complete and intact: `files.json`, the record of every file the save wrote.

The save writes it after every other file of the step, and before `latest` moves to the step:

    {"format_version": 1, "algorithm": "crc32",
     "files": {"mp_rank_00_model_states.pt": {"size": 123, "crc32": "1a2b3c4d"}, ...},
     "crc32": "..."}          (of the same JSON without this field: a damaged record shows)

A step is complete when it has files.json (or, written before neox recorded files, a model.json
of format version 2). Loading checks each file it reads against the record (CRC-32: zlib's, some
GB/s, enough to catch flipped bits and truncation, not an adversary), and a mismatch names the
file and the run's other complete steps.
"""

from __future__ import annotations

import difflib
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_model.checkpoint.format import (
    FILES,
    LATEST,
    MANIFEST,
    MODEL_FILE,
    CorruptCheckpoint,
    NoCheckpoint,
    step_dirs,
    write_atomic,
)

log = logging.getLogger(__name__)

FILES_FORMAT_VERSION = 1
LEGACY_MANIFEST_VERSION = 2  # model.json of steps saved before files.json existed
_CHUNK = 16 << 20


@dataclass(frozen=True)
class FileRecord:
    size: int
    crc32: str  # 8 hex digits


def file_record(path: Path) -> FileRecord:
    crc, size = 0, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return FileRecord(size, f"{crc:08x}")


def step_files(step_dir: Path) -> list[str]:
    """Every file of a step (relative POSIX paths, sorted), files.json and temporary files
    (dot-names) left out."""
    return sorted(
        path.relative_to(step_dir).as_posix()
        for path in step_dir.rglob("*")
        if path.is_file() and path.name != FILES and not path.name.startswith(".")
    )


def record_files(step_dir: Path, names: list[str]) -> dict[str, FileRecord]:
    """The records of `names` (relative to `step_dir`); ranks of a run split this work."""
    return {name: file_record(step_dir / name) for name in names}


def seal_step(step_dir: str | Path, records: dict[str, FileRecord] | None = None) -> Path:
    """Write files.json for every file of `step_dir` (records computed here unless given: then
    they must cover exactly the step's files). The step is complete from then on."""
    step_dir = Path(step_dir)
    names = step_files(step_dir)
    records = record_files(step_dir, names) if records is None else records
    if sorted(records) != names:
        raise AssertionError(f"records of {sorted(records)} for the files {names}")
    files = {name: {"size": r.size, "crc32": r.crc32} for name, r in sorted(records.items())}
    body: dict[str, Any] = {
        "format_version": FILES_FORMAT_VERSION,
        "algorithm": "crc32",
        "files": files,
    }
    body["crc32"] = _body_crc(body)
    return write_atomic(step_dir / FILES, json.dumps(body, indent=1) + "\n")


def _body_crc(body: dict[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "crc32"}
    return f"{zlib.crc32(json.dumps(rest, sort_keys=True).encode()):08x}"


def read_records(step_dir: Path) -> dict[str, FileRecord] | None:
    """files.json of a step; None for a legacy step without one."""
    path = step_dir / FILES
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
        intact = body.get("crc32") == _body_crc(body)
        files = body["files"] if intact else None
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError):
        files = None
    if files is None or body.get("format_version") != FILES_FORMAT_VERSION:
        raise CorruptCheckpoint(f"{path} is damaged: {_earlier_hint(step_dir)}")
    return {name: FileRecord(r["size"], r["crc32"]) for name, r in files.items()}


def is_complete(step_dir: Path) -> bool:
    """Whether the step's save finished: it has files.json, or it is a legacy step."""
    return (step_dir / FILES).is_file() or _is_legacy(step_dir)


def _is_legacy(step_dir: Path) -> bool:
    try:
        body = json.loads((step_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("format_version") == LEGACY_MANIFEST_VERSION


def complete_steps(run_dir: Path) -> list[Path]:
    """The run's complete step directories, oldest first."""
    return [step for step in step_dirs(run_dir) if is_complete(step)]


def verify_step(step_dir: Path, names: list[str] | None = None) -> None:
    """Check `names` (default: every recorded file) against files.json; CorruptCheckpoint
    naming the first file that differs. A legacy step is not checked (a warning says so)."""
    records = read_records(step_dir)
    if records is None:
        log.warning("%s was saved without %s: its files are not checked", step_dir, FILES)
        return
    for name in sorted(records) if names is None else names:
        if name not in records:
            raise CorruptCheckpoint(
                f"{step_dir / name} is not among the files its save recorded in {FILES}: "
                f"{_earlier_hint(step_dir)}"
            )
        path = step_dir / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{path} is missing: {_earlier_hint(step_dir)}")
        if file_record(path) != records[name]:
            raise CorruptCheckpoint(
                f"{path} is damaged (its size or checksum differs from what the save "
                f"recorded): {_earlier_hint(step_dir)}"
            )


def weight_reader_names(step_dir: Path, weights: set[str]) -> list[str] | None:
    """The recorded files that a reader of the model needs checked: the weight files `weights`,
    DeepSpeed's model files and every file that is not a torch file (metadata, tokenizer); the
    optimizer state is left out. None for a legacy step."""
    records = read_records(step_dir)
    if records is None:
        return None
    return sorted(
        name
        for name in records
        if name in weights or MODEL_FILE.match(Path(name).name) or not name.endswith(".pt")
    )


def _earlier_hint(step_dir: Path) -> str:
    earlier = [p for p in complete_steps(step_dir.parent) if p.name != step_dir.name]
    if not earlier:
        return "the run holds no other complete step"
    others = ", ".join(p.name for p in earlier[:-1]) or "none"
    return f"load an earlier complete step with `load: {earlier[-1]}` (others: {others})"


def damaged(step_dir: Path, err: BaseException) -> CorruptCheckpoint:
    """A step whose files were intact by their record but could not be read back."""
    detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return CorruptCheckpoint(
        f"{step_dir} cannot be read back ({detail}): a file is damaged or belongs to another "
        f"model; {_earlier_hint(step_dir)}"
    )


def resolve_step(path: str | Path) -> Path:
    """The complete step a path names: a step directory itself, or a run directory's `latest`.
    NoCheckpoint (one line: what was looked for) when there is none."""
    path = Path(path)
    if not path.exists():
        raise NoCheckpoint(f"{path} does not exist{_siblings(path)}")
    if (path / MANIFEST).is_file() or (path / FILES).is_file():
        if not is_complete(path):
            raise NoCheckpoint(
                f"{path} is an incomplete step (its save did not finish: no {FILES}); "
                f"{_earlier_hint(path)}"
            )
        return path
    pointer = path / LATEST
    if not pointer.is_file():
        complete = complete_steps(path)
        if complete:
            raise NoCheckpoint(
                f"{path} has no `{LATEST}` file but holds the complete steps "
                f"{', '.join(p.name for p in complete)}: name one, e.g. {complete[-1]}"
            )
        raise NoCheckpoint(f"{path} holds no neox checkpoint (no {LATEST}, no complete step)")
    step_dir = path / pointer.read_text(errors="replace").strip()
    if not step_dir.is_dir() or not is_complete(step_dir):
        raise NoCheckpoint(
            f"{pointer} names {step_dir.name!r}, which is not a complete step of {path}; "
            f"{_earlier_hint(step_dir)}"
        )
    return step_dir


def _siblings(path: Path) -> str:
    """', did you mean X?' for a mistyped directory name with a close neighbour."""
    parent = path.parent
    if not parent.is_dir():
        return ""
    names = [p.name for p in parent.iterdir() if p.is_dir()]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {parent / close[0]}?)" if close else ""
