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

That is ``pack_impl="packed"``. GPT-NeoX's two other packings keep documents whole, as
fine-tuning wants: each pass over the documents is a fresh seeded shuffle, and

- ``pack_until_overflow`` appends documents to a sample while they fit in ``seq_length + 1``
  tokens; the first that does not starts the next sample;
- ``unpacked`` puts one document in each sample.

A document longer than ``seq_length + 1`` is cut to that length (``allow_chopped``, the default)
or left out. Samples are padded with token 0 to ``seq_length + 1``. For these two, ``doc_idx``
is the order of the documents used and sample ``k`` is ``doc_idx[sample_idx[k]:sample_idx[k +
1]]``; the cache names carry ``{pack_impl}pi`` (and ``_ac`` when chopping), as GPT-NeoX's do.

`GPTDataset.labels` gives each sample's labels, aligned with its tokens: ``IGNORE_INDEX``
(-100) where a position carries no loss (padding, or a negative id in a label file: a second
token file with the same document sizes, as GPT-NeoX's ``*_label_data_paths``), else the token
id to predict there. `GPTDataset.rewards` gives each sample's per-token rewards (float32, 0 at
padding) from a reward file (GPT-NeoX's ``*_reward_data_paths``, for KTO: float values, one per
token, with the same document sizes).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from neox_data.index_cache import CacheSource, load_or_build
from neox_data.token_file import TokenFile

_MAX_SEED = 2**32 - 1  # np.random.RandomState's seed range
_INDEX_VERSION = b"neox-gpt-index-1"  # change when the index construction changes
INDEX_NAMES = ("doc_idx", "sample_idx", "shuffle_idx")
_STREAM_CHUNK = 1 << 20  # doc_idx entries processed at a time by build_sample_idx
_DOCUMENT_INDEX_VERSION = b"neox-document-index-1"  # the same, for the whole-document packings

PackImpl = Literal["packed", "pack_until_overflow", "unpacked"]
PACK_IMPLS: tuple[PackImpl, ...] = get_args(PackImpl)
IGNORE_INDEX = -100  # the label of a position without loss (GPT-NeoX's and Hugging Face's)
PAD_TOKEN = 0  # what pads a sample's tokens (its labels say to ignore them)
DEFAULT_SPLIT = "969,30,1"  # GPT-NeoX's train, validation and test weights


def split_documents(
    num_docs: int, split: str = DEFAULT_SPLIT
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
            f"bad split {split!r}: expected up to three numbers such as {DEFAULT_SPLIT!r}"
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
    ``pack_impl`` and ``allow_chopped`` choose the packing (see the module docstring);
    ``labels`` is a label file read in step with ``token_file``.
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
        pack_impl: PackImpl = "packed",
        allow_chopped: bool = True,
        labels: TokenFile | None = None,
        rewards: TokenFile | None = None,
    ) -> None:
        documents = _check_documents(token_file, documents)
        _check_arguments(num_samples, seq_length, seed, pack_impl)
        if labels is not None:
            _check_label_file(token_file, labels)
        if rewards is not None:
            _check_reward_file(token_file, rewards)
        self.token_file, self.label_file = token_file, labels
        self.seq_length, self.pack_impl = seq_length, pack_impl
        spec = IndexSpec(documents, num_samples, seq_length, seed, pack_impl, allow_chopped)
        arrays, self.index_source = _index_arrays(token_file, spec, name, cache, cache_dir)
        self.doc_idx, self.sample_idx, self.shuffle_idx = (arrays[n] for n in INDEX_NAMES)
        self.num_epochs = spec.passes(token_file.sizes, len(self.doc_idx))
        reader = _SampleReader if pack_impl == "packed" else _DocumentReader
        self._reader = reader(self.doc_idx, self.sample_idx, seq_length)
        self._tokens = _Source(token_file)
        self._labels = _Source(labels) if labels is not None else None
        self._rewards = _Source(rewards) if rewards is not None else None

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, index: int) -> np.ndarray:
        """Sample ``index`` in served (shuffled) order."""
        return self._reader.read(self._tokens, self._stream_position(index), PAD_TOKEN)

    @property
    def has_labels(self) -> bool:
        """Whether a sample's labels can differ from its tokens (a label file, or padding)."""
        return self._labels is not None or self.pack_impl != "packed"

    def labels(self, index: int) -> np.ndarray:
        """Labels of sample ``index`` (served order), aligned with its tokens: the label file's
        ids, else the tokens themselves; ``IGNORE_INDEX`` at padding and negative labels."""
        sample = self._stream_position(index)
        if self._labels is None:  # token ids are never negative: padding alone is ignored
            return self._reader.read(self._tokens, sample, IGNORE_INDEX)
        labels = self._reader.read(self._labels, sample, IGNORE_INDEX)
        labels[labels < 0] = IGNORE_INDEX
        return labels

    @property
    def has_rewards(self) -> bool:
        return self._rewards is not None

    def rewards(self, index: int) -> np.ndarray:
        """Per-token rewards of sample ``index`` (served order), aligned with its tokens,
        float32, 0 at padding; a ValueError without a reward file."""
        if self._rewards is None:
            raise ValueError("this dataset was built without a reward file")
        sample = self._stream_position(index)
        return self._reader.read(self._rewards, sample, 0, np.float32)

    def unshuffled(self, sample: int) -> np.ndarray:
        """Sample number ``sample`` of the stream (packed: tokens ``sample * seq_length`` on)."""
        if not 0 <= sample < len(self):
            raise IndexError(f"sample {sample} out of range for {len(self)} samples")
        return self._reader.read(self._tokens, sample, PAD_TOKEN)

    def _stream_position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return int(self.shuffle_idx[index])


@dataclass(frozen=True, eq=False)
class IndexSpec:
    """What a dataset's index depends on, besides the token file's document sizes."""

    documents: np.ndarray
    num_samples: int
    seq_length: int
    seed: int
    pack_impl: PackImpl = "packed"
    allow_chopped: bool = True

    def passes(self, sizes: np.ndarray, doc_idx_length: int) -> int:
        """How many passes over the documents the samples take (epochs)."""
        if self.pack_impl == "packed":
            tokens_per_epoch = int(sizes[self.documents].sum(dtype=np.int64))
            # The stream needs num_samples * seq_length + 1 tokens: samples overlap by one token.
            return math.ceil((self.num_samples * self.seq_length + 1) / tokens_per_epoch)
        usable = usable_documents(sizes, self.documents, self.seq_length, self.allow_chopped)
        return math.ceil(doc_idx_length / len(usable))

    def build(self, sizes: np.ndarray) -> dict[str, np.ndarray]:
        if self.pack_impl == "packed":
            return build_index(sizes, self.documents, self.num_samples, self.seq_length, self.seed)
        return build_document_index(
            sizes,
            self.documents,
            self.num_samples,
            self.seq_length,
            self.seed,
            self.pack_impl,
            self.allow_chopped,
        )


def _index_arrays(
    token_file: TokenFile, spec: IndexSpec, name: str, cache: bool, cache_dir: str | Path | None
) -> tuple[dict[str, np.ndarray], CacheSource]:
    def build() -> dict[str, np.ndarray]:
        return spec.build(token_file.sizes)

    if not cache:
        return build(), CacheSource.MEMORY
    stem = index_stem(
        token_file,
        spec.documents,
        name,
        spec.num_samples,
        spec.seq_length,
        spec.seed,
        cache_dir,
        pack_impl=spec.pack_impl,
        allow_chopped=spec.allow_chopped,
    )
    return load_or_build(stem, INDEX_NAMES, build)


def _check_arguments(num_samples: int, seq_length: int, seed: int, pack_impl: str) -> None:
    if num_samples < 1 or seq_length < 1:
        raise ValueError(
            f"num_samples and seq_length must be positive, got {num_samples} and {seq_length}"
        )
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in 0..{_MAX_SEED}, got {seed}")
    if pack_impl not in PACK_IMPLS:
        raise ValueError(f"pack_impl must be one of {', '.join(PACK_IMPLS)}; got {pack_impl!r}")


def _check_label_file(token_file: TokenFile, labels: TokenFile) -> None:
    """A label file holds one signed label per token of ``token_file``, document by document."""
    where = f"label file {labels.prefix} for token file {token_file.prefix}"
    if labels.dtype.kind != "i":
        raise ValueError(
            f"{where}: labels must be signed integers (int32, as GPT-NeoX writes them) so that "
            f"-100 can mark positions without loss; it holds {labels.dtype.name}"
        )
    if len(labels) != len(token_file):
        raise ValueError(
            f"{where}: {len(labels)} documents of labels for {len(token_file)} documents of "
            "tokens; the two must be written together, one label per token"
        )
    differ = np.flatnonzero(labels.sizes != token_file.sizes)
    if len(differ):
        doc = int(differ[0])
        raise ValueError(
            f"{where}: document {doc} has {labels.sizes[doc]} labels and "
            f"{token_file.sizes[doc]} tokens ({len(differ)} documents differ); the two must "
            "be written together, one label per token"
        )


class _Source:
    """One token file's arrays, looked up once (its properties are slower to call per sample)."""

    def __init__(self, token_file: TokenFile) -> None:
        self.tokens = token_file.tokens
        self.pointers = token_file.pointers
        self.itemsize = token_file.dtype.itemsize
        self.sizes = token_file.sizes

    def start(self, document: int) -> int:
        """Where ``document`` starts in ``tokens``."""
        return int(self.pointers[document]) // self.itemsize


def _check_reward_file(token_file: TokenFile, rewards: TokenFile) -> None:
    """A reward file holds one float per token of ``token_file``, document by document."""
    where = f"reward file {rewards.prefix} for token file {token_file.prefix}"
    if rewards.dtype.kind != "f":
        raise ValueError(f"{where}: rewards must be floats; it holds {rewards.dtype.name}")
    if len(rewards) != len(token_file) or np.any(rewards.sizes != token_file.sizes):
        raise ValueError(
            f"{where}: its documents' sizes differ from the tokens'; the two must be written "
            "together, one reward per token"
        )


class _SampleReader:
    """Joins one packed sample's tokens from the documents it spans (plain slices)."""

    def __init__(self, doc_idx: np.ndarray, sample_idx: np.ndarray, seq_length: int) -> None:
        self.doc_idx = doc_idx
        self.sample_idx = sample_idx
        self.length = seq_length + 1

    def read(self, source: _Source, sample: int, pad: int, dtype: type = np.int64) -> np.ndarray:
        """Packed samples are always full: ``pad`` is never used."""
        first, first_offset, last, last_offset = (
            self.sample_idx[sample : sample + 2].ravel().tolist()
        )
        if first == last:  # inside one document: one slice
            start = source.start(int(self.doc_idx[first])) + first_offset
            return source.tokens[start : start + self.length].astype(dtype)
        documents = self.doc_idx[first : last + 1]
        starts = (source.pointers[documents] // source.itemsize).tolist()
        ends = [
            start + size
            for start, size in zip(starts, source.sizes[documents].tolist(), strict=True)
        ]
        starts[0] += first_offset
        ends[-1] = starts[-1] + last_offset + 1
        pieces = [source.tokens[start:end] for start, end in zip(starts, ends, strict=True)]
        tokens: np.ndarray = np.concatenate(pieces).astype(dtype)
        assert len(tokens) == self.length, (sample, len(tokens))
        return tokens


class _DocumentReader:
    """One sample of whole documents, cut to ``seq_length + 1`` tokens and padded to it."""

    def __init__(self, doc_idx: np.ndarray, sample_idx: np.ndarray, seq_length: int) -> None:
        self.doc_idx = doc_idx
        self.sample_idx = sample_idx
        self.length = seq_length + 1

    def read(self, source: _Source, sample: int, pad: int, dtype: type = np.int64) -> np.ndarray:
        first, last = self.sample_idx[sample : sample + 2].tolist()
        out: np.ndarray = np.full(self.length, pad, dtype=dtype)
        filled = 0
        for document in self.doc_idx[first:last].tolist():
            start = source.start(document)
            take = min(int(source.sizes[document]), self.length - filled)
            out[filled : filled + take] = source.tokens[start : start + take]
            filled += take
        return out


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
    if int(token_file.sizes[documents].sum(dtype=np.int64)) == 0:
        raise ValueError(f"the {len(documents)} documents given hold no tokens")
    return documents.astype(np.int64)


def index_stem(
    token_file: TokenFile,
    documents: np.ndarray,
    name: str,
    num_samples: int,
    seq_length: int,
    seed: int,
    cache_dir: str | Path | None = None,
    *,
    pack_impl: PackImpl = "packed",
    allow_chopped: bool = True,
) -> Path:
    """The cache entry's path without its ``_doc_idx.npy`` (etc.) ending."""
    packed = pack_impl == "packed"
    digest = hashlib.blake2b(_INDEX_VERSION if packed else _DOCUMENT_INDEX_VERSION, digest_size=6)
    digest.update(np.array([len(token_file), token_file.idx_path.stat().st_size], "<i8").tobytes())
    if _is_range(documents):
        digest.update(np.array([documents[0], len(documents)], "<i8").tobytes())
    else:
        digest.update(documents.astype("<i8").tobytes())
    label = f"{name}_indexmap_{num_samples}ns_{seq_length}sl_{seed}s"
    if not packed:
        digest.update(f"{pack_impl} chopped={allow_chopped}".encode())
        label += f"_{pack_impl}pi" + ("_ac" if allow_chopped else "")
    directory = Path(cache_dir) if cache_dir is not None else token_file.prefix.parent
    return directory / f"{token_file.prefix.name}_{label}_{digest.hexdigest()}"


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


def usable_documents(
    sizes: np.ndarray, documents: np.ndarray, seq_length: int, allow_chopped: bool
) -> np.ndarray:
    """The documents a whole-document packing uses: not empty, and when not ``allow_chopped``
    no longer than a sample (``seq_length + 1`` tokens)."""
    lengths = sizes[documents]
    keep = lengths > 0 if allow_chopped else (lengths > 0) & (lengths <= seq_length + 1)
    return documents[keep]


def build_document_index(
    sizes: np.ndarray,
    documents: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    pack_impl: PackImpl,
    allow_chopped: bool,
) -> dict[str, np.ndarray]:
    """doc_idx, sample_idx and shuffle_idx of ``pack_until_overflow`` or ``unpacked`` samples:
    sample ``k`` holds documents ``doc_idx[sample_idx[k]:sample_idx[k + 1]]``."""
    usable = usable_documents(sizes, documents, seq_length, allow_chopped)
    if len(usable) == 0:
        raise ValueError(
            f"none of the {len(documents)} documents given can make a sample: they are empty"
            + ("" if allow_chopped else f" or longer than seq_length + 1 ({seq_length + 1})")
            + ("; set allow_chopped to cut long ones" if not allow_chopped else "")
        )
    capacity = seq_length + 1
    lengths = np.minimum(sizes[usable], capacity).astype(np.int64)  # tokens each one gives
    rng = np.random.RandomState(seed)
    if pack_impl == "unpacked":
        order = _passes(len(usable), math.ceil(num_samples / len(usable)), rng)[:num_samples]
        sample_idx = np.arange(num_samples + 1, dtype=np.int64)
    else:
        # Each sample holds at most `capacity` tokens, so a stream of more than
        # num_samples * capacity tokens makes more than num_samples samples.
        passes = num_samples * capacity // int(lengths.sum()) + 1
        order = _passes(len(usable), passes, rng)
        sample_idx = pack_until_overflow(lengths[order], capacity, num_samples)
        order = order[: sample_idx[-1]]
    doc_idx = usable[order]
    dtype = np.int32 if int(documents.max()) <= np.iinfo(np.int32).max else np.int64
    shuffle_rng = np.random.RandomState((seed + 1) % (_MAX_SEED + 1))
    shuffle_idx = shuffle_rng.permutation(num_samples).astype(np.int64)
    return {"doc_idx": doc_idx.astype(dtype), "sample_idx": sample_idx, "shuffle_idx": shuffle_idx}


def _passes(count: int, passes: int, rng: np.random.RandomState) -> np.ndarray:
    """``passes`` permutations of ``range(count)`` back to back, one drawn per pass."""
    order = np.empty(passes * count, dtype=np.int64)
    for p in range(passes):
        order[p * count : (p + 1) * count] = rng.permutation(count)
    return order


def pack_until_overflow(lengths: np.ndarray, capacity: int, num_samples: int) -> np.ndarray:
    """The first entry of each of ``num_samples`` samples, plus one past the last, packing the
    entries of ``lengths`` (each 1..capacity) in order: an entry joins the current sample while
    the sample stays within ``capacity``, else starts the next one.

    Where the sample starting at each entry would end comes from one vectorised search over the
    running total; then the chain of starts is followed, one step per sample.
    """
    ends = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ends[1:])
    # A sample starting at i ends before the first entry j whose end passes ends[i] + capacity.
    nxt = (np.searchsorted(ends, ends[:-1] + capacity, side="right") - 1).tolist()
    starts, position = [0], 0
    for _ in range(num_samples):
        position = nxt[position]
        if position >= len(lengths):  # the stream ended inside sample len(starts) - 1
            raise ValueError(f"{len(starts) - 1} samples from the stream, {num_samples} needed")
        starts.append(position)
    return np.array(starts, dtype=np.int64)
