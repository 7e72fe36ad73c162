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
"""

from __future__ import annotations

import array
import logging
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

import numpy as np
import numpy.typing as npt

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


def _as_tokens(tokens: Sequence[int] | np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert one document's tokens to ``dtype``, refusing values that do not fit."""
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


def _index_bytes(dtype: np.dtype, sizes: np.ndarray) -> bytes:
    """The complete ``.idx`` contents for sequences of ``sizes`` tokens, one per document."""
    count = len(sizes)
    pointers = np.zeros(count, dtype="<i8")
    np.cumsum(sizes[:-1], dtype="<i8", out=pointers[1:])
    pointers *= dtype.itemsize
    doc_idx = np.arange(count + 1, dtype="<i8")
    header = _HEADER.pack(MAGIC, VERSION, _CODE_OF_DTYPE[dtype], count, len(doc_idx))
    return header + sizes.astype("<i4").tobytes() + pointers.tobytes() + doc_idx.tobytes()


class TokenFileWriter:
    """Write a token file, one document per sequence, atomically.

    Use as a context manager. Tokens stream to a temporary ``.bin`` in the output directory;
    only the per-document sizes stay in memory. On a clean exit the ``.bin`` and then the
    ``.idx`` are renamed into place; on an exception every temporary file is removed.
    """

    def __init__(
        self, prefix: str | Path, dtype: npt.DTypeLike, *, overwrite: bool = False
    ) -> None:
        self.prefix = Path(prefix)
        self.dtype = _token_dtype(dtype)
        self.overwrite = overwrite
        self.bin_path = bin_path(prefix)
        self.idx_path = idx_path(prefix)
        self._check_outputs_free()
        self._sizes = array.array("i")
        self._bin: BinaryIO | None = None
        self._tmp_bin: Path | None = None
        self._num_tokens = 0

    @property
    def num_documents(self) -> int:
        return len(self._sizes)

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

    def _temp_path(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(
            prefix=f".{self.prefix.name}.", suffix=f"{suffix}.tmp", dir=self.prefix.parent
        )
        os.close(fd)
        return Path(name)

    def __enter__(self) -> TokenFileWriter:
        if self._bin is not None:
            raise RuntimeError(f"writer for {self.prefix} is already open")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = self._temp_path(".bin")
        self._bin = self._tmp_bin.open("wb")
        return self

    def add_document(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one document (written as one sequence)."""
        if self._bin is None:
            raise RuntimeError("TokenFileWriter.add_document called outside its `with` block")
        values = _as_tokens(tokens, self.dtype)
        if len(values) > np.iinfo(np.int32).max:
            raise ValueError(f"document of {len(values)} tokens exceeds the int32 size field")
        self._bin.write(values.tobytes())
        self._sizes.append(len(values))
        self._num_tokens += len(values)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._bin is not None and self._tmp_bin is not None
        self._bin.close()
        self._bin = None
        tmp_bin, self._tmp_bin = self._tmp_bin, None
        if exc_type is not None:
            tmp_bin.unlink(missing_ok=True)
            return
        try:
            self._commit(tmp_bin)
        finally:
            tmp_bin.unlink(missing_ok=True)

    def _commit(self, tmp_bin: Path) -> None:
        """Write the index to a temporary file, then rename ``.bin`` and ``.idx`` into place."""
        sizes = np.frombuffer(self._sizes, dtype=np.int32) if self._sizes else np.empty(0, "<i4")
        tmp_idx = self._temp_path(".idx")
        try:
            tmp_idx.write_bytes(_index_bytes(self.dtype, sizes))
            self._check_outputs_free()
            # An old .idx beside a new .bin would look valid: drop it before renaming.
            self.idx_path.unlink(missing_ok=True)
            os.replace(tmp_bin, self.bin_path)
            os.replace(tmp_idx, self.idx_path)
        finally:
            tmp_idx.unlink(missing_ok=True)
        logger.debug(
            "wrote %s (%d documents, %d tokens)", self.prefix, self.num_documents, self.num_tokens
        )


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
        self._tokens = _map(self.bin_path, self.dtype)
        self._check_bin()

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
        if len(self.sizes) == 0:
            return
        needed = int(self.pointers[-1]) // self.dtype.itemsize + int(self.sizes[-1])
        if len(self._tokens) < needed:
            raise ValueError(
                f"{self.bin_path}: truncated token data: the index needs {needed} tokens of "
                f"{self.dtype.name}, the file holds {len(self._tokens)}"
            )

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def num_tokens(self) -> int:
        """Total number of tokens over all sequences."""
        return int(self.sizes.sum(dtype=np.int64))

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
    return np.memmap(path, dtype=dtype, mode="r")
