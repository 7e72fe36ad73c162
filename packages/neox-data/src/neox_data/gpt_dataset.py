"""GPT training samples packed from a token file, as Megatron-LM's and GPT-NeoX's GPT dataset.

Documents are concatenated into one token stream (enough shuffled epochs to cover the samples
asked for) and the stream is cut into samples of ``seq_length + 1`` tokens, consecutive samples
sharing one token: the inputs are ``sample[:-1]``, the labels ``sample[1:]``. Three indexes do it:

- ``doc_idx``: the document order of the stream, one shuffled permutation per epoch;
- ``sample_idx``: for each sample boundary, (position in ``doc_idx``, token offset);
- ``shuffle_idx``: the order in which samples are served.
"""

from __future__ import annotations

import math

import numpy as np

from neox_data.token_file import TokenFile

_MAX_SEED = 2**32 - 1  # np.random.RandomState's seed range


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
    """``num_samples`` samples of ``seq_length + 1`` tokens (int64) from ``documents``."""

    def __init__(
        self,
        token_file: TokenFile,
        documents: np.ndarray,
        num_samples: int,
        seq_length: int,
        seed: int,
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
        self.doc_idx = build_doc_idx(documents, self.num_epochs, np.random.RandomState(seed))
        stream_sizes = token_file.sizes[self.doc_idx]
        self.sample_idx = build_sample_idx(stream_sizes, num_samples, seq_length)
        shuffle_rng = np.random.RandomState((seed + 1) % (_MAX_SEED + 1))
        self.shuffle_idx = shuffle_rng.permutation(num_samples).astype(np.int64)

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, index: int) -> np.ndarray:
        """Sample ``index`` in served (shuffled) order."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return self.unshuffled(int(self.shuffle_idx[index]))

    def unshuffled(self, sample: int) -> np.ndarray:
        """Sample number ``sample`` of the stream: tokens ``sample * seq_length`` onwards."""
        first, first_offset = self.sample_idx[sample]
        last, last_offset = self.sample_idx[sample + 1]
        if first == last:
            piece = self.token_file.get(
                self.doc_idx[first], first_offset, last_offset - first_offset + 1
            )
            tokens = piece.astype(np.int64)
        else:
            pieces = [self.token_file.get(self.doc_idx[first], first_offset)]
            pieces += [self.token_file.get(self.doc_idx[i]) for i in range(first + 1, last)]
            pieces.append(self.token_file.get(self.doc_idx[last], 0, last_offset + 1))
            tokens = np.concatenate(pieces).astype(np.int64)
        assert len(tokens) == self.seq_length + 1, (sample, len(tokens))
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


def build_doc_idx(documents: np.ndarray, num_epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """The stream's document order: ``num_epochs`` permutations of ``documents``, one per epoch."""
    return np.concatenate([rng.permutation(documents) for _ in range(num_epochs)]).astype(np.int64)


def build_sample_idx(stream_sizes: np.ndarray, num_samples: int, seq_length: int) -> np.ndarray:
    """(doc_idx position, token offset) of each sample's first token, plus one past the last.

    Sample ``k`` runs from boundary ``k`` to boundary ``k + 1`` inclusive: its last token is
    the next sample's first. Empty documents are never pointed at.
    """
    # (len(stream_sizes) + 1,) stream position where each doc_idx entry starts
    doc_starts = np.concatenate([[0], np.cumsum(stream_sizes, dtype=np.int64)])
    # (num_samples + 1,) stream position of each boundary
    positions = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    if positions[-1] >= doc_starts[-1]:
        raise ValueError(
            f"{num_samples} samples of {seq_length} tokens need {positions[-1] + 1} tokens; "
            f"the stream holds {doc_starts[-1]}"
        )
    entry = np.searchsorted(doc_starts, positions, side="right") - 1
    return np.stack([entry, positions - doc_starts[entry]], axis=1).astype(np.int64)
