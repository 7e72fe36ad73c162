"""Megatron / GPT-NeoX memory-mapped token files: ``PREFIX.bin`` plus ``PREFIX.idx``.

The ``.bin`` file is every sequence's tokens concatenated. The ``.idx`` file, all little-endian:

    magic      9 bytes   b"MMIDIDX\\x00\\x00"
    version    <Q        1
    dtype      <B        token dtype code (see DTYPE_CODES)
    nseq       <Q        number of sequences
    ndoc_idx   <Q        length of doc_idx (number of documents + 1)
    sizes      int32[nseq]       tokens per sequence
    pointers   int64[nseq]       byte offset of each sequence in .bin (exclusive cumsum)
    doc_idx    int64[ndoc_idx]   0, then the number of sequences after each document

As GPT-NeoX preprocessing writes them, every document is exactly one sequence.

`TokenFile.id_range` scans the ``.bin`` once for its smallest and largest token id (a trainer
checks them against its vocabulary) and caches them beside the index caches as
``PREFIX_ids_{digest}_range.npy``, the digest naming the ``.bin``'s inode, size and modification
time.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import logging
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

import numpy as np
import numpy.typing as npt

from neox_data.atomic_file import reporting_full_disk, temporary_file
from neox_data.index_cache import load_or_build

logger = logging.getLogger(__name__)

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, nseq, len(doc_idx)

# Megatron-LM core's table (megatron/core/datasets/indexed_dataset.py, enum DType).
# Some older readers (fairseq-derived, early Megatron and GPT-NeoX) disagree on codes 6 and 7
# (float32 vs float64); token files only ever use the integer codes, which everyone agrees on.
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype("<u1"),
    2: np.dtype("<i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f8"),
    7: np.dtype("<f4"),
    8: np.dtype("<u2"),
}
_CODE_OF_DTYPE = {dtype: code for code, dtype in DTYPE_CODES.items()}

# GPT-NeoX switches to int32 tokens at this vocabulary size (it keeps some headroom below 65536).
_UINT16_VOCAB_LIMIT = 65500
_COPY_BUFFER = 16 << 20
_CHECK_CHUNK = 1 << 20  # index entries checked at a time, to bound memory
_SCAN_CHUNK = 1 << 24  # tokens scanned at a time for the id range
_ID_RANGE_VERSION = b"neox-id-range-1"  # change when the cached id range changes meaning


def best_dtype(vocab_size: int) -> np.dtype:
    """The smallest token dtype GPT-NeoX would use for ``vocab_size``: uint16 or int32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size < _UINT16_VOCAB_LIMIT else np.dtype("<i4")


def bin_path(prefix: str | Path) -> Path:
    """The ``.bin`` path of a token file prefix."""
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    """The ``.idx`` path of a token file prefix."""
    return Path(f"{prefix}.idx")


def _token_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """Validate and normalise a token dtype to its little-endian form with a Megatron code."""
    resolved = np.dtype(dtype).newbyteorder("<")
    if resolved.kind not in "iu" or resolved not in _CODE_OF_DTYPE:
        supported = ", ".join(DTYPE_CODES[c].name for c in (1, 2, 3, 4, 5, 8))
        raise ValueError(f"token dtype must be one of {supported}; got {np.dtype(dtype)}")
    return resolved


def _float_dtype(dtype: npt.DTypeLike) -> np.dtype:
    resolved = np.dtype(dtype).newbyteorder("<")
    if resolved.kind != "f" or resolved not in _CODE_OF_DTYPE:
        raise ValueError(f"float values are float32 or float64; got {np.dtype(dtype)}")
    return resolved


def as_token_array(tokens: Sequence[int] | np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert tokens to the token ``dtype``, refusing values that do not fit."""
    values = np.asarray(tokens)
    if values.size == 0:
        return np.empty(0, dtype=dtype)
    if values.ndim != 1:
        raise ValueError(f"a document must be a 1-D sequence of tokens, got shape {values.shape}")
    info = np.iinfo(dtype)
    if values.dtype.kind == "O":  # Python ints too large for any numpy integer type
        for value in values:
            if not isinstance(value, int) or not info.min <= value <= info.max:
                raise ValueError(f"token value {value!r} does not fit in {dtype.name}")
    elif values.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {values.dtype}")
    bad = (values < info.min) | (values > info.max)
    if bad.any():
        value = values[np.argmax(bad)]
        raise ValueError(
            f"token value {value} does not fit in {dtype.name} (range {info.min}..{info.max})"
        )
    return values.astype(dtype, copy=False)


def _index_bytes(dtype: np.dtype, sizes: np.ndarray, doc_idx: np.ndarray) -> bytes:
    """The complete ``.idx`` contents for sequences of ``sizes`` tokens grouped by ``doc_idx``."""
    count = len(sizes)
    pointers = np.zeros(count, dtype="<i8")
    np.cumsum(sizes[:-1], dtype="<i8", out=pointers[1:])
    pointers *= dtype.itemsize
    header = _HEADER.pack(MAGIC, VERSION, _CODE_OF_DTYPE[dtype], count, len(doc_idx))
    return (
        header
        + sizes.astype("<i4").tobytes()
        + pointers.tobytes()
        + doc_idx.astype("<i8").tobytes()
    )


class TokenFileWriter:
    """Write a token file, one document per sequence, atomically.

    Use as a context manager (or several at once with `writing_together`). Tokens stream to a
    temporary ``.bin`` in the output directory; only the per-document sizes stay in memory. On
    a clean exit the index is written to a temporary ``.idx``, then the ``.bin`` and the
    ``.idx`` are renamed into place; on an exception every temporary file is removed. A process
    killed mid-run leaves only hidden ``.PREFIX.*.tmp`` files, never a ``.bin``/``.idx`` pair.
    A full disk is a `NoSpaceError` naming the ``.bin`` or ``.idx`` being written.
    ``floats`` writes float values (float32 or float64: a reward file, one value per token of
    a token file) instead of token ids.
    """

    def __init__(
        self,
        prefix: str | Path,
        dtype: npt.DTypeLike,
        *,
        overwrite: bool = False,
        floats: bool = False,
    ) -> None:
        self.prefix = Path(prefix)
        self.floats = floats
        self.dtype = _float_dtype(dtype) if floats else _token_dtype(dtype)
        self.overwrite = overwrite
        self.bin_path = bin_path(prefix)
        self.idx_path = idx_path(prefix)
        self._check_outputs_free()
        self._sizes = array.array("i")  # tokens per sequence
        self._doc_idx = array.array("q", [0])  # sequence count after each document
        self._num_tokens = 0
        self._bin: BinaryIO | None = None
        self._tmp_bin: Path | None = None
        self._tmp_idx: Path | None = None

    @property
    def num_documents(self) -> int:
        return len(self._doc_idx) - 1

    @property
    def num_tokens(self) -> int:
        return self._num_tokens

    def _check_outputs_free(self) -> None:
        if self.overwrite:
            return
        for path in (self.bin_path, self.idx_path):
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists; pass --overwrite (overwrite=True) to replace it"
                )

    def _write(self, data: bytes) -> None:
        assert self._bin is not None, "write before open"
        with reporting_full_disk(self.bin_path):
            self._bin.write(data)

    def __enter__(self) -> TokenFileWriter:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._prepare()
            self._publish()
        finally:
            self._abort()  # removes whatever temporary file is left

    def _open(self) -> None:
        if self._tmp_bin is not None:
            raise RuntimeError(f"writer for {self.prefix} is already open")
        self._sizes, self._doc_idx, self._num_tokens = array.array("i"), array.array("q", [0]), 0
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = temporary_file(self.prefix, ".bin.tmp")
        self._bin = self._tmp_bin.open("wb")

    def _values(self, tokens: Sequence[int] | Sequence[float] | np.ndarray) -> np.ndarray:
        if not self.floats:
            return as_token_array(tokens, self.dtype)  # type: ignore[arg-type]
        values = np.asarray(tokens, dtype=self.dtype)
        if values.ndim != 1 or not np.isfinite(values).all():
            raise ValueError("float values must be a 1-D sequence of finite numbers")
        return values

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one document (written as one sequence)."""
        if self._bin is None:
            raise RuntimeError("TokenFileWriter.add_document called outside its `with` block")
        values = self._values(tokens)
        if len(values) > np.iinfo(np.int32).max:
            raise ValueError(f"document of {len(values)} tokens exceeds the int32 size field")
        self._write(values.tobytes())
        self._sizes.append(len(values))
        self._doc_idx.append(len(self._sizes))
        self._num_tokens += len(values)

    def add_documents(
        self, tokens: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray
    ) -> None:
        """Append ``len(lengths)`` documents stored back to back in ``tokens``."""
        if self._bin is None:
            raise RuntimeError("TokenFileWriter.add_documents called outside its `with` block")
        values = self._values(tokens)
        sizes = np.asarray(lengths, dtype=np.int64)
        if sizes.ndim != 1 or (sizes < 0).any() or int(sizes.sum()) != len(values):
            raise ValueError(
                f"lengths must be non-negative and sum to the {len(values)} tokens given, "
                f"got {sizes.sum()} in {len(sizes)} lengths"
            )
        if len(sizes) and sizes.max() > np.iinfo(np.int32).max:
            raise ValueError(f"document of {sizes.max()} tokens exceeds the int32 size field")
        self._write(values.tobytes())
        first = len(self._sizes)
        self._sizes.frombytes(sizes.astype("=i4").tobytes())
        self._doc_idx.frombytes(np.arange(first + 1, first + len(sizes) + 1, dtype="=i8").tobytes())
        self._num_tokens += len(values)

    def add_token_file(self, source: TokenFile) -> None:
        """Append all of ``source`` (same dtype): its ``.bin`` copied in bulk, its sequences and
        document boundaries kept as they are."""
        if self._bin is None:
            raise RuntimeError("TokenFileWriter.add_token_file called outside its `with` block")
        if source.dtype != self.dtype:
            raise ValueError(
                f"{source.prefix} holds {source.dtype.name} tokens; this file holds "
                f"{self.dtype.name}: merge only token files of one dtype"
            )
        with source.bin_path.open("rb") as data, reporting_full_disk(self.bin_path):
            shutil.copyfileobj(data, self._bin, _COPY_BUFFER)
        offset = len(self._sizes)
        self._sizes.frombytes(source.sizes.astype("=i4").tobytes())
        self._doc_idx.frombytes((source.doc_idx[1:] + offset).astype("=i8").tobytes())
        self._num_tokens += source.num_tokens

    def _abort(self) -> None:
        if self._bin is not None:
            with contextlib.suppress(OSError):  # e.g. the full disk that stopped the run
                self._bin.close()
            self._bin = None
        for temp in (self._tmp_bin, self._tmp_idx):
            if temp is not None:
                temp.unlink(missing_ok=True)
        self._tmp_bin = self._tmp_idx = None

    def _prepare(self) -> None:
        """Close the ``.bin`` and write the index, both still under temporary names."""
        assert self._bin is not None, "prepare before open"
        with reporting_full_disk(self.bin_path):
            self._bin.close()
        self._bin = None
        sizes = np.frombuffer(self._sizes, dtype=np.int32) if self._sizes else np.empty(0, "<i4")
        doc_idx = np.frombuffer(self._doc_idx, dtype=np.int64)
        self._tmp_idx = temporary_file(self.prefix, ".idx.tmp")
        with reporting_full_disk(self.idx_path):
            self._tmp_idx.write_bytes(_index_bytes(self.dtype, sizes, doc_idx))

    def _publish(self) -> None:
        """Rename the prepared ``.bin`` then ``.idx`` into place."""
        assert self._tmp_bin is not None and self._tmp_idx is not None, "publish before prepare"
        self._check_outputs_free()
        # An old .idx beside a new .bin would look valid: drop it before renaming.
        self.idx_path.unlink(missing_ok=True)
        os.replace(self._tmp_bin, self.bin_path)
        os.replace(self._tmp_idx, self.idx_path)
        self._tmp_bin = self._tmp_idx = None
        logger.debug(
            "wrote %s (%d documents, %d tokens)", self.prefix, self.num_documents, self.num_tokens
        )


@contextmanager
def writing_together(writers: Sequence[TokenFileWriter]) -> Iterator[None]:
    """Open several writers; publish all of them only once every one is complete.

    Every index is written (under a temporary name) before the first rename, so an error in
    any writer, or in the ``with`` block, leaves none of the files in place.
    """
    opened: list[TokenFileWriter] = []
    try:
        for writer in writers:
            writer._open()
            opened.append(writer)
        yield
        for writer in writers:
            writer._prepare()
        for writer in writers:
            writer._check_outputs_free()
        for writer in writers:
            writer._publish()
    finally:
        for writer in opened:
            writer._abort()


class TokenFile:
    """Read-only, memory-mapped view of a token file written by Megatron, GPT-NeoX or neox."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.idx_path = idx_path(prefix)
        self.bin_path = bin_path(prefix)
        self._idx = _map(self.idx_path, np.uint8)
        self.dtype, count, doc_count = self._read_header()
        offset = _HEADER.size
        self.sizes: np.ndarray = self._section(offset, "<i4", count)
        offset += 4 * count
        self.pointers: np.ndarray = self._section(offset, "<i8", count)
        offset += 8 * count
        self.doc_idx: np.ndarray = self._section(offset, "<i8", doc_count)
        offset += 8 * doc_count
        if offset != len(self._idx):
            self._fail(f"expected {offset} bytes for {count} sequences, found {len(self._idx)}")
        self._check_index()
        self._tokens = _map(self.bin_path, self.dtype)
        self._check_bin()
        self._id_range: tuple[int, int] | None = None

    def _fail(self, problem: str) -> NoReturn:
        raise ValueError(f"{self.idx_path}: not a valid token index: {problem}")

    def _read_header(self) -> tuple[np.dtype, int, int]:
        if len(self._idx) < _HEADER.size:
            self._fail(f"truncated header ({len(self._idx)} of {_HEADER.size} bytes)")
        magic, version, code, count, doc_count = _HEADER.unpack(self._idx[: _HEADER.size].tobytes())
        if magic != MAGIC:
            self._fail(f"wrong magic {magic!r} (expected {MAGIC!r})")
        if version != VERSION:
            self._fail(f"unsupported version {version} (expected {VERSION})")
        if code not in DTYPE_CODES:
            self._fail(f"unknown dtype code {code} (known: {sorted(DTYPE_CODES)})")
        return DTYPE_CODES[code], count, doc_count

    def _section(self, offset: int, dtype: str, count: int) -> np.ndarray:
        end = offset + np.dtype(dtype).itemsize * count
        if end > len(self._idx):
            self._fail(f"truncated: needs at least {end} bytes, found {len(self._idx)}")
        return np.frombuffer(self._idx, dtype=dtype, count=count, offset=offset)

    def _check_bin(self) -> None:
        """The ``.bin`` must hold exactly the tokens the index describes, nothing more."""
        expected = self.num_tokens * self.dtype.itemsize
        actual = len(self._tokens) * self.dtype.itemsize
        if actual < expected:
            problem = "is truncated"
        elif actual > expected:
            problem = "is longer than its index says (the .bin of another index?)"
        else:
            return
        raise ValueError(
            f"{self.bin_path}: truncated or foreign token data: the file {problem}: "
            f"{self.idx_path} describes {expected} bytes ({self.num_tokens} {self.dtype.name} "
            f"tokens), the file holds {actual}; re-create the .bin/.idx pair"
        )

    def _check_index(self) -> None:
        """Sizes non-negative, pointers back to back from 0, doc_idx running from 0 to count."""
        count, itemsize = len(self.sizes), self.dtype.itemsize
        for start in range(0, count, _CHECK_CHUNK):
            sizes = self.sizes[start : start + _CHECK_CHUNK + 1].astype(np.int64)
            pointers = self.pointers[start : start + _CHECK_CHUNK + 1]
            if sizes.min() < 0:
                self._fail(f"negative sequence size near sequence {start}")
            if (start == 0 and pointers[0] != 0) or (
                np.diff(pointers) != sizes[:-1] * itemsize
            ).any():
                self._fail(f"sequence pointers do not follow the sizes near sequence {start}")
        doc_idx = self.doc_idx
        if len(doc_idx) == 0 or doc_idx[0] != 0 or doc_idx[-1] != count:
            self._fail(f"doc_idx must run from 0 to the sequence count {count}")
        for start in range(0, len(doc_idx), _CHECK_CHUNK):
            if (np.diff(doc_idx[start : start + _CHECK_CHUNK + 1]) < 0).any():
                self._fail(f"doc_idx decreases near document {start}")

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def tokens(self) -> np.ndarray:
        """Every token of the file, back to back (read-only, memory-mapped)."""
        return self._tokens

    @property
    def num_tokens(self) -> int:
        """Total number of tokens over all sequences."""
        return int(self.sizes.sum(dtype=np.int64))

    def id_range(self) -> tuple[int, int] | None:
        """(smallest, largest) token id in the file; None when it holds no tokens. Scanned
        once, then read from its cache file (see the module docstring)."""
        if self._id_range is None and self.num_tokens:
            arrays, _ = load_or_build(self._id_range_stem(), ["range"], self._scan_id_range)
            low, high = arrays["range"].tolist()
            self._id_range = (low, high)
        return self._id_range

    def max_id(self) -> int | None:
        """The largest token id in the file; None when it holds no tokens."""
        found = self.id_range()
        return None if found is None else found[1]

    def _id_range_stem(self) -> Path:
        """The cache entry of the id range, named for this ``.bin`` (inode, size, modification
        time: a file rewritten under the same name is a new inode)."""
        info = self.bin_path.stat()
        code = _CODE_OF_DTYPE[self.dtype]
        key = struct.pack("<QQqB", info.st_ino, info.st_size, info.st_mtime_ns, code)
        digest = hashlib.blake2b(_ID_RANGE_VERSION + key, digest_size=6).hexdigest()
        return self.prefix.parent / f"{self.prefix.name}_ids_{digest}"

    def _scan_id_range(self) -> dict[str, np.ndarray]:
        low, high = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        for start in range(0, len(self._tokens), _SCAN_CHUNK):
            chunk = self._tokens[start : start + _SCAN_CHUNK]
            low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
        return {"range": np.array([low, high], dtype=np.int64)}

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get(index)

    def get(self, index: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``offset:offset+length`` of sequence ``index`` (a read-only view)."""
        count = len(self.sizes)
        if not -count <= index < count:
            raise IndexError(
                f"sequence {index} out of range for {count} sequences in {self.prefix}"
            )
        index %= count
        size = int(self.sizes[index])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(
                f"tokens {offset}:{offset + length} out of range for sequence {index} of {size}"
            )
        start = int(self.pointers[index]) // self.dtype.itemsize + offset
        return self._tokens[start : start + length]


def _map(path: Path, dtype: npt.DTypeLike) -> np.ndarray:
    """Memory-map ``path`` read-only (numpy cannot map an empty file, so give it an empty array)."""
    if not path.is_file():
        raise FileNotFoundError(f"token file part not found: {path}")
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise ValueError(
            f"{path}: size {size} bytes is not a whole number of {np.dtype(dtype).name} tokens"
        )
    if size == 0:
        return np.empty(0, dtype=dtype)
    # A plain ndarray view of the map: indexing a np.memmap subclass is several times slower.
    return np.asarray(np.memmap(path, dtype=dtype, mode="r"))


def find_token_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Token file prefixes from prefixes and directories (every ``*.idx`` pair inside, sorted)."""
    prefixes: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p.with_suffix("") for p in path.glob("*.idx"))
            if not found:
                raise FileNotFoundError(f"directory {path} holds no .idx/.bin token files")
            prefixes.extend(found)
        else:
            prefixes.append(Path(str(path).removesuffix(".idx").removesuffix(".bin")))
    if not prefixes:
        raise ValueError("no token files given to merge")
    return prefixes


def merge_token_files(
    inputs: Sequence[str | Path], output_prefix: str | Path, *, overwrite: bool = False
) -> TokenFile:
    """Concatenate token files (prefixes, or directories of them) into one, in order.

    Tokens are copied in bulk, sequences and document boundaries kept: the result equals
    preprocessing the inputs' corpora one after the other. All inputs must share a dtype.
    """
    sources = [TokenFile(prefix) for prefix in find_token_files(inputs)]
    dtypes = {source.dtype for source in sources}
    if len(dtypes) > 1:
        listing = ", ".join(f"{s.prefix} ({s.dtype.name})" for s in sources)
        raise ValueError(f"cannot merge token files of different dtypes: {listing}")
    with TokenFileWriter(output_prefix, sources[0].dtype, overwrite=overwrite) as writer:
        for source in sources:
            writer.add_token_file(source)
    return TokenFile(output_prefix)
