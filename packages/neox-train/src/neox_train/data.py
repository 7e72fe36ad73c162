"""From token files to torch batches.

The token file's documents are split into train / valid / test by `split`; each part becomes a
`neox_data.GPTDataset` of packed `seq_length + 1`-token samples. With `train_data_paths` (and
`valid_data_paths`, `test_data_paths`) each purpose reads its own files whole instead, one
`GPTDataset` per file, blended by its weights (`neox_data.BlendedDataset`).

Global step `t` consumes samples [t * global_batch, (t + 1) * global_batch) of the train set
whatever the number of ranks, so a run on 1 rank and on N ranks with the same global batch sees
the same samples per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from neox_data import (
    BlendedDataset,
    GPTDataset,
    TokenFile,
    blend_sample_counts,
    split_documents,
    weights_by_num_documents,
)
from neox_train.batch import BatchLayout
from neox_train.run_config import DataConfig
from neox_train.schema import ConfigError

Samples = GPTDataset | BlendedDataset


@dataclass(frozen=True)
class Splits:
    train: Samples
    valid: Samples | None  # None when the split (or no valid_data_paths) gives it nothing
    test: Samples | None


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


def build_datasets(data: DataConfig, seq_length: int, counts: SampleCounts, seed: int) -> Splits:
    """The run's train / valid / test samples: `data_path` divided by `split`, or the files of
    `train_data_paths`, `valid_data_paths` and `test_data_paths`."""
    if not data.train_data_paths:
        assert data.data_path is not None
        return build_splits(data.data_path, data.split, seq_length, counts, seed)
    sets = []
    for kind, wanted in (("train", counts.train), ("valid", counts.valid), ("test", counts.test)):
        paths = getattr(data, f"{kind}_data_paths")
        weights = getattr(data, f"{kind}_data_weights")
        sets.append(
            _blend(kind, paths, weights, wanted, data, seq_length, seed)
            if paths and wanted
            else None
        )
    train, valid, test = sets
    assert train is not None
    return Splits(train, valid, test)


def _blend(
    kind: str,
    paths: tuple[str, ...],
    weights: tuple[float, ...] | None,
    num_samples: int,
    data: DataConfig,
    seq_length: int,
    seed: int,
) -> Samples:
    files = []
    for path in paths:
        try:
            files.append(TokenFile(path))
        except FileNotFoundError as err:
            raise ConfigError(f"{kind}_data_paths {path!r}: {err}") from err
    if data.weight_by_num_documents:
        blend = weights_by_num_documents([len(f) for f in files], data.weighted_sampler_alpha)
    else:
        blend = list(weights) if weights is not None else [1.0] * len(files)
    needed = blend_sample_counts(blend, num_samples)
    datasets = [
        GPTDataset(
            f, np.arange(len(f), dtype=np.int64), max(n, 1), seq_length, seed, name=f"{kind}{i}"
        )
        for i, (f, n) in enumerate(zip(files, needed, strict=True))
    ]
    return datasets[0] if len(datasets) == 1 else BlendedDataset(datasets, blend, num_samples)


def micro_batches(
    dataset: Samples, step: int, batch: BatchLayout, dp_rank: int
) -> Iterator[torch.Tensor]:
    """This rank's micro batches of global step `step`, each (micro_batch, seq_length + 1)."""
    start = step * batch.global_batch
    for accum in range(batch.grad_accum):
        first = start + (accum * batch.data_parallel + dp_rank) * batch.micro_batch
        rows = [dataset[i] for i in range(first, first + batch.micro_batch)]
        yield torch.from_numpy(np.stack(rows).astype(np.int64))
