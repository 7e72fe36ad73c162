"""From token files to torch batches.

The token file's documents are split into train / valid / test by `split`; each part becomes a
`neox_data.GPTDataset` of packed `seq_length + 1`-token samples. Global step `t` consumes samples
[t * global_batch, (t + 1) * global_batch) of the train set whatever the number of ranks, so a
run on 1 rank and on N ranks with the same global batch sees the same samples per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from neox_data import GPTDataset, TokenFile, split_documents
from neox_train.batch import BatchLayout
from neox_train.schema import ConfigError


@dataclass(frozen=True)
class Splits:
    train: GPTDataset
    valid: GPTDataset | None  # None when the split gives it no documents
    test: GPTDataset | None


@dataclass(frozen=True)
class SampleCounts:
    train: int
    valid: int
    test: int


def sample_counts(train_iters: int, eval_iters: int, batch: BatchLayout) -> SampleCounts:
    """Samples each split must provide: validation reuses one fixed set of eval_iters batches."""
    return SampleCounts(
        train=train_iters * batch.global_batch,
        valid=eval_iters * batch.global_batch,
        test=eval_iters * batch.global_batch,
    )


def build_splits(
    data_path: str, split: str, seq_length: int, counts: SampleCounts, seed: int
) -> Splits:
    try:
        tokens = TokenFile(data_path)
    except FileNotFoundError as err:
        raise ConfigError(f"data_path {data_path!r}: {err}") from err
    parts = split_documents(len(tokens), split)
    wanted = (counts.train, counts.valid, counts.test)
    datasets = [
        GPTDataset(tokens, docs, n, seq_length, seed, name=name) if len(docs) and n else None
        for docs, n, name in zip(parts, wanted, ("train", "valid", "test"), strict=True)
    ]
    train, valid, test = datasets
    if train is None:
        raise ConfigError(f"split {split!r} leaves no training documents in {data_path}")
    return Splits(train, valid, test)


def micro_batches(
    dataset: GPTDataset, step: int, batch: BatchLayout, dp_rank: int
) -> Iterator[torch.Tensor]:
    """This rank's micro batches of global step `step`, each (micro_batch, seq_length + 1)."""
    start = step * batch.global_batch
    for accum in range(batch.grad_accum):
        first = start + (accum * batch.data_parallel + dp_rank) * batch.micro_batch
        rows = [dataset[i] for i in range(first, first + batch.micro_batch)]
        yield torch.from_numpy(np.stack(rows).astype(np.int64))
