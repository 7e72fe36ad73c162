"""GPT training samples packed from a token file, as Megatron-LM's and GPT-NeoX's GPT dataset.

Documents are concatenated into one token stream (enough shuffled epochs to cover the samples
asked for) and the stream is cut into samples of ``seq_length + 1`` tokens, consecutive samples
sharing one token: the inputs are ``sample[:-1]``, the labels ``sample[1:]``. Three indexes do it:

- ``doc_idx``: the document order of the stream, one shuffled permutation per epoch;
- ``sample_idx``: for each sample boundary, (position in ``doc_idx``, token offset);
- ``shuffle_idx``: the order in which samples are served.

The three are cached as ``.npy`` files next to the token file (see `neox_data.index_cache`),
named as GPT-NeoX names them plus a digest of what they depend on:
``{prefix}_{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s_{digest}_doc_idx.npy``. The
digest keeps a cache from being reused for another document set or token file, and keeps
GPT-NeoX's own cache files (built by a different shuffle) from being mistaken for ours.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from neox_data.index_cache import CacheSource, load_or_build
from neox_data.token_file import TokenFile

_MAX_SEED = 2**32 - 1  # np.random.RandomState's seed range
_INDEX_VERSION = b"neox-gpt-index-1"  # change when the index construction changes
INDEX_NAMES = ("doc_idx", "sample_idx", "shuffle_idx")
_STREAM_CHUNK = 1 << 20  # doc_idx entries processed at a time by build_sample_idx


def split_documents(
    num_docs: int, split: str = "969,30,1"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Document indices of the train, validation and test splits, as GPT-NeoX's ``split``.

    Weights are separated by ``,`` or ``/``, padded with zeros to three and normalised. The
    boundaries are the cumulative ``round(weight * num_docs)``; any rounding excess is then
    taken off every boundary, as GPT-NeoX does, so that the last one is ``num_docs``.
    """
    if num_docs < 0:
        raise ValueError(f"num_docs must not be negative, got {num_docs}")
    weights = _parse_split(split)
    boundaries = [0]
    for weight in weights:
        boundaries.append(boundaries[-1] + round(weight * num_docs))
    excess = boundaries[-1] - num_docs
    bounds = np.clip(np.array(boundaries, dtype=np.int64) - [0, excess, excess, excess], 0, None)
    train, valid, test = (np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(3))
    return train, valid, test


def _parse_split(split: str) -> list[float]:
    separator = "," if "," in split else "/"
    try:
        weights = [float(part) for part in split.split(separator)]
    except ValueError:
        raise ValueError(
            f"bad split {split!r}: expected up to three numbers such as '969,30,1'"
        ) from None
    if len(weights) > 3:
        raise ValueError(f"bad split {split!r}: at most three weights (train, valid, test)")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"bad split {split!r}: weights must be non-negative with a positive sum")
    weights += [0.0] * (3 - len(weights))
    total = sum(weights)
    return [w / total for w in weights]


class GPTDataset:
    """``num_samples`` samples of ``seq_length + 1`` tokens (int64) from ``documents``.

    ``name`` (GPT-NeoX: ``train``, ``valid``, ``test``, ``train_0``...) goes into the cache file
    names; ``cache_dir`` puts them elsewhere than beside the token file, and ``cache=False``
    keeps the index in memory. ``index_source`` says whether this process built or loaded it.
    """

    def __init__(
        self,
        token_file: TokenFile,
        documents: np.ndarray,
        num_samples: int,
        seq_length: int,
        seed: int,
        *,
        name: str = "train",
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        documents = _check_documents(token_file, documents)
        if num_samples < 1 or seq_length < 1:
            raise ValueError(
                f"num_samples and seq_length must be positive, got {num_samples} and {seq_length}"
            )
        if not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"seed must be in 0..{_MAX_SEED}, got {seed}")
        tokens_per_epoch = int(token_file.sizes[documents].sum(dtype=np.int64))
        if tokens_per_epoch == 0:
            raise ValueError(f"the {len(documents)} documents given hold no tokens")
        self.token_file = token_file
        self.seq_length = seq_length
        # The stream needs num_samples * seq_length + 1 tokens: samples overlap by one token.
        self.num_epochs = math.ceil((num_samples * seq_length + 1) / tokens_per_epoch)

        def build() -> dict[str, np.ndarray]:
            return build_index(token_file.sizes, documents, num_samples, seq_length, seed)

        if cache:
            stem = index_stem(token_file, documents, name, num_samples, seq_length, seed, cache_dir)
            arrays, self.index_source = load_or_build(stem, INDEX_NAMES, build)
        else:
            arrays, self.index_source = build(), CacheSource.MEMORY
        self.doc_idx, self.sample_idx, self.shuffle_idx = (arrays[n] for n in INDEX_NAMES)
        self._reader = _SampleReader(token_file, self.doc_idx, self.sample_idx, seq_length)

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, index: int) -> np.ndarray:
        """Sample ``index`` in served (shuffled) order."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return self._reader.read(int(self.shuffle_idx[index]))

    def unshuffled(self, sample: int) -> np.ndarray:
        """Sample number ``sample`` of the stream: tokens ``sample * seq_length`` onwards."""
        if not 0 <= sample < len(self):
            raise IndexError(f"sample {sample} out of range for {len(self)} samples")
        return self._reader.read(sample)


class _SampleReader:
    """Joins one sample's tokens from the documents it spans (plain slices: no index arrays)."""

    def __init__(
        self, token_file: TokenFile, doc_idx: np.ndarray, sample_idx: np.ndarray, seq_length: int
    ) -> None:
        self.tokens = token_file.tokens
        self.pointers = token_file.pointers
        self.itemsize = token_file.dtype.itemsize
        self.sizes = token_file.sizes
        self.doc_idx = doc_idx
        self.sample_idx = sample_idx
        self.length = seq_length + 1

    def read(self, sample: int) -> np.ndarray:
        first, first_offset, last, last_offset = (
            self.sample_idx[sample : sample + 2].ravel().tolist()
        )
        if first == last:  # inside one document: one slice
            start = int(self.pointers[self.doc_idx[first]]) // self.itemsize + first_offset
            return self.tokens[start : start + self.length].astype(np.int64)
        documents = self.doc_idx[first : last + 1]
        starts = (self.pointers[documents] // self.itemsize).tolist()
        ends = [
            start + size for start, size in zip(starts, self.sizes[documents].tolist(), strict=True)
        ]
        starts[0] += first_offset
        ends[-1] = starts[-1] + last_offset + 1
        pieces = [self.tokens[start:end] for start, end in zip(starts, ends, strict=True)]
        tokens = np.concatenate(pieces).astype(np.int64)
        assert len(tokens) == self.length, (sample, len(tokens))
        return tokens


def _check_documents(token_file: TokenFile, documents: np.ndarray) -> np.ndarray:
    documents = np.asarray(documents)
    if documents.ndim != 1 or documents.size == 0:
        raise ValueError(f"documents must be a non-empty 1-D array, got shape {documents.shape}")
    if documents.dtype.kind not in "iu":
        raise ValueError(f"documents must be integer indices, got dtype {documents.dtype}")
    if documents.min() < 0 or documents.max() >= len(token_file):
        raise ValueError(
            f"document indices must be in 0..{len(token_file) - 1} for {token_file.prefix}, "
            f"got {documents.min()}..{documents.max()}"
        )
    return documents.astype(np.int64)


def index_stem(
    token_file: TokenFile,
    documents: np.ndarray,
    name: str,
    num_samples: int,
    seq_length: int,
    seed: int,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cache entry's path without its ``_doc_idx.npy`` (etc.) ending."""
    digest = hashlib.blake2b(_INDEX_VERSION, digest_size=6)
    digest.update(np.array([len(token_file), token_file.idx_path.stat().st_size], "<i8").tobytes())
    if _is_range(documents):
        digest.update(np.array([documents[0], len(documents)], "<i8").tobytes())
    else:
        digest.update(documents.astype("<i8").tobytes())
    directory = Path(cache_dir) if cache_dir is not None else token_file.prefix.parent
    label = f"{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s_{digest.hexdigest()}"
    return directory / f"{token_file.prefix.name}_{label}"


def _is_range(documents: np.ndarray) -> bool:
    """Whether ``documents`` is ``first, first + 1, ...`` (what `split_documents` returns)."""
    if int(documents[-1]) - int(documents[0]) != len(documents) - 1:
        return False
    return bool((np.diff(documents) == 1).all())


def build_index(
    sizes: np.ndarray, documents: np.ndarray, num_samples: int, seq_length: int, seed: int
) -> dict[str, np.ndarray]:
    """doc_idx, sample_idx and shuffle_idx of a GPT dataset (see the module docstring)."""
    tokens_per_epoch = int(sizes[documents].sum(dtype=np.int64))
    num_epochs = math.ceil((num_samples * seq_length + 1) / tokens_per_epoch)
    doc_idx = build_doc_idx(documents, num_epochs, np.random.RandomState(seed))
    sample_idx = build_sample_idx(sizes, num_samples, seq_length, doc_idx)
    shuffle_rng = np.random.RandomState((seed + 1) % (_MAX_SEED + 1))
    shuffle_idx = shuffle_rng.permutation(num_samples).astype(np.int64)
    return {"doc_idx": doc_idx, "sample_idx": sample_idx, "shuffle_idx": shuffle_idx}


def build_doc_idx(documents: np.ndarray, num_epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """The stream's document order: ``num_epochs`` permutations of ``documents``, one per epoch.

    int32 when the document ids fit (as GPT-NeoX stores it), else int64.
    """
    count = len(documents)
    dtype = np.int32 if int(documents.max()) <= np.iinfo(np.int32).max else np.int64
    doc_idx = np.empty(num_epochs * count, dtype=dtype)
    contiguous = _is_range(documents)
    for epoch in range(num_epochs):  # the same draws as rng.permutation(documents)
        order = rng.permutation(count)  # faster than shuffling an int32 range in place
        target = doc_idx[epoch * count : (epoch + 1) * count]
        if contiguous:
            np.add(order, documents[0], out=target, casting="unsafe")
        else:
            np.take(documents, order, out=target, mode="clip")
    return doc_idx


def build_sample_idx(
    stream_sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    doc_idx: np.ndarray | None = None,
) -> np.ndarray:
    """(doc_idx position, token offset) of each sample's first token, plus one past the last.

    Entry ``e`` of the stream has ``stream_sizes[e]`` tokens, or ``stream_sizes[doc_idx[e]]``
    when ``doc_idx`` is given (then ``stream_sizes`` is the per-document sizes array). Sample
    ``k`` runs from boundary ``k`` (stream position ``k * seq_length``) to boundary ``k + 1``
    inclusive: its last token is the next sample's first. Empty documents are never pointed at.
    The stream is walked in chunks, so memory stays small whatever its length.
    """
    length = len(stream_sizes) if doc_idx is None else len(doc_idx)
    sample_idx = np.empty((num_samples + 1, 2), dtype=np.int64)
    starts = np.empty(_STREAM_CHUNK + 1, dtype=np.int64)  # chunk entries' stream positions
    boundary, chunk_start_position = 0, 0
    for first in range(0, length, _STREAM_CHUNK):
        entries = slice(first, min(first + _STREAM_CHUNK, length))
        sizes = stream_sizes[entries] if doc_idx is None else stream_sizes[doc_idx[entries]]
        chunk = starts[: len(sizes) + 1]
        chunk[0] = chunk_start_position
        np.cumsum(sizes, dtype=np.int64, out=chunk[1:])
        chunk[1:] += chunk_start_position
        # Boundaries inside this chunk: stream positions below its end.
        end = min(num_samples + 1, -(-int(chunk[-1]) // seq_length))
        positions = np.arange(boundary, end, dtype=np.int64) * seq_length
        entry = np.searchsorted(chunk, positions, side="right") - 1
        sample_idx[boundary:end, 0] = entry + first
        sample_idx[boundary:end, 1] = positions - chunk[entry]
        boundary, chunk_start_position = end, int(chunk[-1])
    if boundary <= num_samples:
        raise ValueError(
            f"{num_samples} samples of {seq_length} tokens need {num_samples * seq_length + 1} "
            f"tokens; the stream holds {chunk_start_position}"
        )
    return sample_idx
