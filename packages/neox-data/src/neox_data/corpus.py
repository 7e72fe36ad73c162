"""Raw text corpora: ``.jsonl``, ``.jsonl.zst`` and ``.txt`` files, read as documents."""

from __future__ import annotations

import glob
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TextIO

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.zst", ".txt")


class MissingDependencyError(ImportError):
    """An optional dependency is needed; the message names the extra to install."""


@dataclass(frozen=True)
class Document:
    """One text of a corpus: ``key`` is the JSON field it came from, ``line`` is 1-based."""

    key: str
    text: str
    source: Path
    line: int


def resolve_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand comma-separated lists and globs into existing files, in order.

    Raises FileNotFoundError for a name or pattern that matches nothing and ValueError for a
    file whose suffix is not one of ``.jsonl``, ``.jsonl.zst`` or ``.txt``.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    resolved: list[Path] = []
    for entry in paths:
        for pattern in str(entry).split(","):
            pattern = pattern.strip()
            if pattern:
                resolved.extend(_expand(pattern))
    if not resolved:
        raise FileNotFoundError("no input files given")
    for path in resolved:
        _suffix_of(path)
    return resolved


def _expand(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
        files = [m for m in matches if m.is_file()]
        if not files:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        return files
    path = Path(pattern)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return [path]


def _suffix_of(path: Path) -> str:
    for suffix in SUPPORTED_SUFFIXES:
        if path.name.endswith(suffix):
            return suffix
    supported = ", ".join(SUPPORTED_SUFFIXES)
    raise ValueError(f"{path}: unsupported input file type; supported: {supported}")


def iter_documents(
    paths: str | Path | Iterable[str | Path], keys: Sequence[str] = ("text",)
) -> Iterator[Document]:
    """Yield the documents of every input file, file by file and in file order.

    A JSON-lines object yields one `Document` per key, in ``keys`` order. A ``.txt`` file is a
    single document, yielded under the first key.
    """
    if not keys:
        raise ValueError("at least one JSON key is needed")
    for path in resolve_paths(paths):
        if _suffix_of(path) == ".txt":
            yield Document(keys[0], _read_text(path), path, 1)
        else:
            yield from _iter_jsonl(path, keys)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 text ({err})") from None


def _iter_jsonl(path: Path, keys: Sequence[str]) -> Iterator[Document]:
    line_number = 0
    with _open_text(path) as lines:
        try:
            for line_number, line in enumerate(lines, start=1):
                if line.strip():
                    yield from _parse_record(path, line_number, line, keys)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{line_number + 1}: not valid UTF-8 ({err})") from None


def _parse_record(path: Path, line_number: int, line: str, keys: Sequence[str]) -> list[Document]:
    where = f"{path}:{line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: malformed JSON: {err}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    documents = []
    for key in keys:
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r} (keys present: {sorted(record)})")
        text = record[key]
        if not isinstance(text, str):
            raise ValueError(f"{where}: key {key!r} holds {type(text).__name__}, not a string")
        documents.append(Document(key, text, path, line_number))
    return documents


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """Open a ``.jsonl`` or ``.jsonl.zst`` file as UTF-8 text."""
    if _suffix_of(path) != ".jsonl.zst":
        with path.open(encoding="utf-8") as handle:
            yield handle
        return
    zstandard = _import_zstandard()
    with path.open("rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        with io.TextIOWrapper(reader, encoding="utf-8") as handle:
            yield handle


def _import_zstandard() -> ModuleType:
    try:
        import zstandard
    except ImportError:
        raise MissingDependencyError(
            "reading .jsonl.zst files needs the zstandard package: pip install 'neox-data[zstd]'"
        ) from None
    return zstandard
