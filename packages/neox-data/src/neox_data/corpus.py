"""Raw text corpora read as documents: JSON lines (plain, zstd, gzip, lm_dataformat) and text files.

Inputs, as GPT-NeoX's preprocessing and lm_dataformat take them:

- ``.jsonl``, ``.jsonl.zst``, ``.jsonl.gz`` and ``.json.gz``: one JSON object per line. A value
  that is a list of strings is one document, its paragraphs joined by a blank line, and a line
  that is a bare JSON string is a document of the first key (lm_dataformat's conventions).
- ``.jsonl.zst.tar``: a tar of ``.jsonl.zst`` members (lm_dataformat's tar archives).
- ``.txt``: the whole file is one document of the first key.
- ``.zip`` and ``.tar.gz``: each file inside is one document of the first key (as lm_dataformat
  reads them; enwik8 is a zip of one file).
- a directory: its files with those suffixes, sorted by name (an lm_dataformat archive
  directory of ``data_*.jsonl.zst`` chunks); other files in it are ignored.

Bytes that are not UTF-8, and unpaired surrogates from JSON ``\\ud800`` escapes, become U+FFFD;
such documents are counted in `ReadStats.invalid_utf8`. A line that is not a JSON object holding
the keys as strings stops reading with FILE:LINE and the problem, or, with
``skip_bad_lines=True``, is counted in `ReadStats.bad_lines` and skipped.

Compressed data (``.zst`` frames, ``.gz`` members, archives) is read to its end-of-stream
marker: a file that ends before it (an interrupted download or copy) or whose compressed data is
damaged stops reading with a `DamagedInputError` naming the file (and the archive member), under
``skip_bad_lines`` too; its last, cut-off line is never parsed as a bad line.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import logging
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from neox_data.dependency import import_optional

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json.gz")
TAR_SUFFIX = ".jsonl.zst.tar"
TEXT_SUFFIX = ".txt"
TEXT_ARCHIVE_SUFFIXES = (".zip", ".tar.gz")  # every member file is one document
SUPPORTED_SUFFIXES = (*JSONL_SUFFIXES, TAR_SUFFIX, TEXT_SUFFIX, *TEXT_ARCHIVE_SUFFIXES)
PARAGRAPH_JOINER = "\n\n"  # lm_dataformat joins a list-of-paragraphs text with this
_REPORTED_BAD_LINES = 10  # skipped lines logged one by one; the rest are only counted
_SURROGATE = re.compile("[\ud800-\udfff]")
_READ_SIZE = 1 << 20  # compressed bytes read at a time
# What the standard library's decompressors and archive readers raise for damaged or cut data.
_DAMAGE = (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Document:
    """One text of a corpus: ``key`` is the JSON field it came from, ``line`` is 1-based.

    ``member`` names the file inside a tar archive ``source`` ("" for a plain file).
    """

    key: str
    text: str
    source: Path
    line: int
    member: str = ""


@dataclass
class ReadStats:
    """What reading skipped or repaired, counted while the documents stream by."""

    bad_lines: int = 0  # lines skipped under skip_bad_lines
    invalid_utf8: int = 0  # lines or files whose text needed U+FFFD replacements
    bad_line_examples: list[str] = field(default_factory=list)  # first few, "FILE:LINE: why"


class BadLineError(ValueError):
    """A JSON line that cannot be read as a document; the message starts with FILE:LINE."""


class DamagedInputError(ValueError):
    """A compressed file or archive that is truncated or damaged; the message starts with the
    file (``FILE[MEMBER]`` inside a tar). Never skipped: the rest of the file is unknown."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(
            f"{where}: truncated or damaged file ({problem}); download or copy it again"
        )


@contextmanager
def _damage_named(where: str) -> Iterator[None]:
    """Report a decompressor's or archive reader's error as a `DamagedInputError` of ``where``."""
    try:
        yield
    except _DAMAGE as err:
        raise DamagedInputError(where, str(err) or type(err).__name__) from None


def resolve_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand comma-separated lists, globs and directories into input files, in order.

    Raises FileNotFoundError for a name or pattern that matches nothing and ValueError for a
    file whose suffix is not a supported one.
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
        suffix_of(path)
    return resolved


def _expand(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
        files = [m for m in matches if not m.is_dir()]
        if not files:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        return files
    path = Path(pattern)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.is_dir() and _has_suffix(p))
        if not files:
            supported = ", ".join(SUPPORTED_SUFFIXES)
            raise FileNotFoundError(f"directory {path} holds no input files ({supported})")
        return files
    if not path.exists():  # FIFOs and /dev/stdin are fine: only the name's suffix matters
        raise FileNotFoundError(f"input file not found: {path}")
    return [path]


def _has_suffix(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in SUPPORTED_SUFFIXES)


def suffix_of(path: Path) -> str:
    """The supported suffix ``path`` ends with (the longest), or a ValueError."""
    matches = [suffix for suffix in SUPPORTED_SUFFIXES if path.name.endswith(suffix)]
    if not matches:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ValueError(f"{path}: unsupported input file type; supported: {supported}")
    return max(matches, key=len)


def iter_documents(
    paths: str | Path | Iterable[str | Path],
    keys: Sequence[str] = ("text",),
    *,
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Yield the documents of every input file, file by file and in file order.

    A JSON-lines object yields one `Document` per key, in ``keys`` order. Counts of skipped and
    repaired input go to ``stats`` when one is given.
    """
    if not keys:
        raise ValueError("at least one JSON key is needed")
    reader = _Reader(tuple(keys), skip_bad_lines, stats if stats is not None else ReadStats())
    for path in resolve_paths(paths):
        with _damage_named(str(path)):
            yield from reader.documents(path)


@dataclass
class _Reader:
    keys: tuple[str, ...]
    skip_bad_lines: bool
    stats: ReadStats

    def documents(self, path: Path) -> Iterator[Document]:
        match suffix_of(path):
            case ".txt":
                yield self.text_file(path)
            case ".jsonl.zst.tar":
                yield from self.tar_archive(path)
            case ".zip" | ".tar.gz":
                yield from self.text_archive(path)
            case _:
                with open_lines(path) as lines:
                    yield from self.json_lines(lines, path)

    def text_file(self, path: Path) -> Document:
        text = self._decode(path.read_bytes())
        return Document(self.keys[0], text, path, 1)

    def text_archive(self, path: Path) -> Iterator[Document]:
        for member, data in _archive_members(path):
            yield Document(self.keys[0], self._decode(data), path, 1, member)

    def tar_archive(self, path: Path) -> Iterator[Document]:
        import_optional("zstandard", "zstd", f"reading {TAR_SUFFIX} archives")
        with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                handle = archive.extractfile(member)
                assert handle is not None  # a regular file always has contents
                stream = _ZstdStream(handle, f"{path}[{member.name}]")
                yield from self.json_lines(io.BufferedReader(stream), path, member.name)

    def json_lines(
        self, lines: Iterable[bytes], path: Path, member: str = ""
    ) -> Iterator[Document]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}[{member}]:{number}" if member else f"{path}:{number}"
            try:
                texts = self._parse(line, where)
            except BadLineError as err:
                if not self.skip_bad_lines:
                    raise
                self._count_bad_line(str(err))
                continue
            for key, text in zip(self.keys, texts, strict=True):
                yield Document(key, text, path, number, member)

    def _parse(self, line: bytes, where: str) -> list[str]:
        try:
            record = json.loads(self._decode(line))
        except json.JSONDecodeError as err:
            raise BadLineError(f"{where}: malformed JSON: {err}") from None
        if isinstance(record, str) and len(self.keys) == 1:
            return [self._clean(record)]
        if not isinstance(record, dict):
            raise BadLineError(f"{where}: expected a JSON object, got {type(record).__name__}")
        return [self._clean(self._text_of(record, key, where)) for key in self.keys]

    @staticmethod
    def _text_of(record: dict, key: str, where: str) -> str:
        if key not in record:
            raise BadLineError(f"{where}: missing key {key!r} (keys present: {sorted(record)})")
        value = record[key]
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return PARAGRAPH_JOINER.join(value)
        if not isinstance(value, str):
            raise BadLineError(f"{where}: key {key!r} holds {type(value).__name__}, not a string")
        return value

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.stats.invalid_utf8 += 1
            return data.decode("utf-8", errors="replace")

    def _clean(self, text: str) -> str:
        """Replace unpaired surrogates (legal in JSON escapes, not in UTF-8) with U+FFFD."""
        if not _SURROGATE.search(text):
            return text
        self.stats.invalid_utf8 += 1
        return _SURROGATE.sub("\ufffd", text)

    def _count_bad_line(self, problem: str) -> None:
        self.stats.bad_lines += 1
        if len(self.stats.bad_line_examples) < _REPORTED_BAD_LINES:
            self.stats.bad_line_examples.append(problem)
            logger.warning("skipped bad line %s", problem)


def _archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, contents) of each regular file in a ``.zip`` or ``.tar.gz``, in archive order."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, archive.read(info)
        return
    with gzip.open(path, "rb") as stream:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield member.name, handle.read()
        while stream.read(_READ_SIZE):  # to the gzip end-of-stream marker, past the tar's end
            pass


@contextmanager
def open_lines(path: Path) -> Iterator[Iterable[bytes]]:
    """Open a JSON-lines file, decompressing ``.zst`` and ``.gz``, as binary lines."""
    suffix = suffix_of(path)
    if suffix.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            yield handle
        return
    if not suffix.endswith(".zst"):
        with path.open("rb") as handle:
            yield handle
        return
    import_optional("zstandard", "zstd", "reading .jsonl.zst files")
    with path.open("rb") as raw, io.BufferedReader(_ZstdStream(raw, str(path))) as stream:
        yield stream


class _ZstdStream(io.RawIOBase):
    """The decompressed bytes of zstd data, frame after frame, as a raw stream.

    Data that ends inside a frame raises `DamagedInputError` naming ``where`` before the bytes
    of its last, incomplete line are handed out (zstandard's own ``stream_reader`` returns what
    it has and stops, without an error).
    """

    def __init__(self, raw: IO[bytes], where: str) -> None:
        super().__init__()
        self._zstd = import_optional("zstandard", "zstd", "reading .zst files")
        self._raw, self._where = raw, where
        self._frame = self._zstd.ZstdDecompressor().decompressobj()
        self._in_frame = False  # some of the current frame has been read, not its end
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._out:
            if not self._decompress_more():
                return 0
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._out))
        view[:count] = self._out[:count]
        self._out = self._out[count:]
        return count

    def _decompress_more(self) -> bool:
        """Decompress the next block of input; False at its end (after a whole frame)."""
        data = self._raw.read(_READ_SIZE)
        if not data:
            if self._in_frame:
                problem = "the zstd data ends inside a frame, before its end-of-stream marker"
                raise DamagedInputError(self._where, problem)
            return False
        pieces = []
        try:
            while data:
                self._in_frame = True
                pieces.append(self._frame.decompress(data))
                if not self._frame.eof:
                    break
                data, self._in_frame = self._frame.unused_data, False
                self._frame = self._zstd.ZstdDecompressor().decompressobj()
        except self._zstd.ZstdError as err:
            raise DamagedInputError(self._where, f"zstd: {err}") from None
        self._out = memoryview(b"".join(pieces))
        return True
