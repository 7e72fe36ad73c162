"""Preference pairs: GPT-NeoX's ``dataset_impl: pairwise`` (its ``pos_*`` / ``neg_*`` data and
label paths), for DPO and reward-model training.

Two token files hold the chosen (``pos``) and rejected (``neg``) sequence of each pair, document
for document (``neox-data preprocess-chat --jsonl-keys chosen rejected`` writes them so), each
with an optional label file. Sample ``k`` is one pair: both sides' document, one document per
sample (``pack_impl`` unpacked: cut to ``seq_length + 1`` tokens, padded with 0, labels
``IGNORE_INDEX`` at the padding), the pairs shuffled and repeated over seeded passes as
`GPTDataset` serves unpacked documents. Both sides use the same document order, so the pairing
holds in every sample; files whose documents do not pair up (another count, a side empty where
the other is not) are refused with the files named.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from neox_data.gpt_dataset import GPTDataset
from neox_data.token_file import TokenFile


class PairwiseSample(NamedTuple):
    chosen: np.ndarray  # (seq_length + 1,) int64 tokens
    chosen_labels: np.ndarray  # (seq_length + 1,) int64, IGNORE_INDEX without a loss
    rejected: np.ndarray
    rejected_labels: np.ndarray


class PairwiseDataset:
    """``num_samples`` preference pairs from ``documents`` of the ``pos`` and ``neg`` token
    files (see the module's docstring); the other arguments as `GPTDataset`'s."""

    def __init__(
        self,
        pos: TokenFile,
        neg: TokenFile,
        documents: np.ndarray,
        num_samples: int,
        seq_length: int,
        seed: int,
        *,
        name: str = "train",
        cache: bool = True,
        cache_dir: str | Path | None = None,
        pos_labels: TokenFile | None = None,
        neg_labels: TokenFile | None = None,
        allow_chopped: bool = True,
    ) -> None:
        if len(pos.sizes) != len(neg.sizes):
            raise ValueError(
                f"{pos.prefix} holds {len(pos.sizes)} documents and {neg.prefix} "
                f"{len(neg.sizes)}: pairwise data pairs them document by document"
            )
        unpaired = np.flatnonzero((pos.sizes > 0) != (neg.sizes > 0))
        if len(unpaired):
            raise ValueError(
                f"document {int(unpaired[0])} is empty on one side only ({pos.prefix}: "
                f"{int(pos.sizes[unpaired[0]])} tokens, {neg.prefix}: "
                f"{int(neg.sizes[unpaired[0]])}): every pair needs both sequences"
            )
        if not allow_chopped:  # a pair with a side too long is left out whole
            capacity = seq_length + 1
            fits = (pos.sizes[documents] <= capacity) & (neg.sizes[documents] <= capacity)
            documents = documents[fits]
        self.chosen, self.rejected = (
            GPTDataset(
                side,
                documents,
                num_samples,
                seq_length,
                seed,
                name=f"{name}_{which}",
                cache=cache,
                cache_dir=cache_dir,
                pack_impl="unpacked",
                allow_chopped=allow_chopped,
                labels=labels,
            )
            for side, which, labels in ((pos, "pos", pos_labels), (neg, "neg", neg_labels))
        )
        assert np.array_equal(self.chosen.doc_idx, self.rejected.doc_idx)  # paired above

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> PairwiseSample:
        """Pair ``index`` in served (shuffled) order."""
        return PairwiseSample(
            self.chosen[index],
            self.chosen.labels(index),
            self.rejected[index],
            self.rejected.labels(index),
        )
