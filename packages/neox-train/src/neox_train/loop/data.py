"""From token files to torch batches.

The token file's documents are split into train / valid / test by `split`; each part becomes a
`neox_data.GPTDataset` of `seq_length + 1`-token samples, packed as `pack_impl` says. With
`train_data_paths` (and `valid_data_paths`, `test_data_paths`) each purpose reads its own files
whole instead, one `GPTDataset` per file (with its label file, `*_label_data_paths`), blended by
its weights (`neox_data.BlendedDataset`).

A micro batch is (inputs, labels), each (micro_batch, seq_length): the labels are the next
tokens, or the label file's, with `IGNORE_INDEX` where a position carries no loss (padding,
-100 in a label file, and with `eod_mask_loss` the positions whose input is end-of-document).

With `dataset_impl: pairwise` a sample is a preference pair (`neox_data.PairwiseDataset`, from
the pos_* and neg_* files of each purpose, several files blended equally or by
weight_by_num_documents), and a micro batch of `micro_batch` pairs is (2 x micro_batch,
seq_length): the chosen sequences first, then the rejected ones in the same order, as GPT-NeoX
concatenates them.

Global step `t` consumes samples [t * global_batch, (t + 1) * global_batch) of the train set
whatever the number of ranks, so a run on 1 rank and on N ranks with the same global batch sees
the same samples per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neox_data import (
    IGNORE_INDEX,
    BlendedDataset,
    GPTDataset,
    PairwiseDataset,
    PairwiseSample,
    TokenFile,
    blend_sample_counts,
    split_documents,
    weights_by_num_documents,
)
from neox_train.config.batch import BatchLayout
from neox_train.config.inputs import full_disk_reported
from neox_train.config.schema import ConfigError
from neox_train.config.sections import DataConfig

Samples = GPTDataset | BlendedDataset | PairwiseDataset


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


def build_splits(data: DataConfig, seq_length: int, counts: SampleCounts, seed: int) -> Splits:
    assert data.data_path is not None
    tokens = _token_file("data_path", data.data_path)
    parts = split_documents(len(tokens), data.split)
    wanted = (counts.train, counts.valid, counts.test)
    datasets = [
        _dataset(data, tokens, None, docs, n, seq_length, seed, name) if len(docs) and n else None
        for docs, n, name in zip(parts, wanted, ("train", "valid", "test"), strict=True)
    ]
    train, valid, test = datasets
    if train is None:
        raise ConfigError(f"split {data.split!r} leaves no training documents in {data.data_path}")
    return Splits(train, valid, test)


def build_datasets(data: DataConfig, seq_length: int, counts: SampleCounts, seed: int) -> Splits:
    """The run's train / valid / test samples: `data_path` divided by `split`, or the files of
    `train_data_paths`, `valid_data_paths` and `test_data_paths`, or with dataset_impl pairwise
    the pairs of the pos_* and neg_* files."""
    if data.dataset_impl == "pairwise":
        return build_pairwise(data, seq_length, counts, seed)
    if not data.train_data_paths:
        return build_splits(data, seq_length, counts, seed)
    sets = []
    for kind, wanted in (("train", counts.train), ("valid", counts.valid), ("test", counts.test)):
        paths = getattr(data, f"{kind}_data_paths")
        sets.append(
            _blend(kind, paths, wanted, data, seq_length, seed) if paths and wanted else None
        )
    train, valid, test = sets
    assert train is not None
    return Splits(train, valid, test)


def build_pairwise(data: DataConfig, seq_length: int, counts: SampleCounts, seed: int) -> Splits:
    """The preference pairs of each purpose (see the module's docstring)."""
    sets: list[Samples | None] = []
    for kind, wanted in (("train", counts.train), ("valid", counts.valid), ("test", counts.test)):
        files = data.pairwise_paths(kind)
        sets.append(
            _pairwise(kind, files, wanted, data, seq_length, seed) if files and wanted else None
        )
    train, valid, test = sets
    assert train is not None
    return Splits(train, valid, test)


def _pairwise(
    kind: str,
    files: list[tuple[str, str, str | None, str | None]],
    num_samples: int,
    data: DataConfig,
    seq_length: int,
    seed: int,
) -> Samples:
    chosen = [_token_file(f"pos_{kind}_data_paths", pos) for pos, _, _, _ in files]
    rejected = [_token_file(f"neg_{kind}_data_paths", neg) for _, neg, _, _ in files]
    blend = _blend_weights(data, kind, [len(f) for f in chosen])
    needed = blend_sample_counts(blend, num_samples)
    built = []
    for i, (pos, neg, (_, _, pos_labels, neg_labels), n) in enumerate(
        zip(chosen, rejected, files, needed, strict=True)
    ):
        with full_disk_reported(), _named_problem(f"pos_{kind}_data_paths / neg_{kind}_data_paths"):
            dataset = PairwiseDataset(
                pos,
                neg,
                np.arange(len(pos)),
                max(n, 1),
                seq_length,
                seed,
                name=f"{kind}{i}",
                pos_labels=_optional_file(f"pos_{kind}_label_data_paths", pos_labels),
                neg_labels=_optional_file(f"neg_{kind}_label_data_paths", neg_labels),
                allow_chopped=data.allow_chopped,
            )
        built.append(dataset)
    return _one_or_blended(built, blend, num_samples)


def _optional_file(key: str, path: str | None) -> TokenFile | None:
    return _token_file(key, path) if path else None


def _blend_weights(data: DataConfig, kind: str, documents: list[int]) -> list[float]:
    """The blend weights of `kind`'s files (of `documents` documents each): by document counts
    with weight_by_num_documents, else `{kind}_data_weights` (pairwise data has none), else
    equal."""
    if data.weight_by_num_documents:
        return weights_by_num_documents(documents, data.weighted_sampler_alpha)
    weights = getattr(data, f"{kind}_data_weights")
    return list(weights) if weights is not None else [1.0] * len(documents)


def _one_or_blended(datasets: list[Any], blend: list[float], num_samples: int) -> Samples:
    return datasets[0] if len(datasets) == 1 else BlendedDataset(datasets, blend, num_samples)


def _dataset(
    data: DataConfig,
    tokens: TokenFile,
    labels: TokenFile | None,
    documents: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    name: str,
    rewards: TokenFile | None = None,
) -> GPTDataset:
    with full_disk_reported(), _named_problem(name):  # caching the index beside the file
        return GPTDataset(
            tokens,
            documents,
            num_samples,
            seq_length,
            seed,
            name=name,
            pack_impl=data.pack_impl,
            allow_chopped=data.allow_chopped,
            labels=labels,
            rewards=rewards,
        )


@contextlib.contextmanager
def _named_problem(what: str) -> Iterator[None]:
    """Files that do not go together (a label or reward file, a pair's sides) are a user error,
    said naming `what`."""
    try:
        yield
    except ValueError as err:
        raise ConfigError(f"{what}: {err}") from err


def _token_file(key: str, path: str) -> TokenFile:
    try:
        return TokenFile(path)
    except FileNotFoundError as err:
        raise ConfigError(f"{key} {path!r}: {err}") from err


def _blend(
    kind: str,
    paths: tuple[str, ...],
    num_samples: int,
    data: DataConfig,
    seq_length: int,
    seed: int,
) -> Samples:
    files = [_token_file(f"{kind}_data_paths", path) for path in paths]
    label_paths = getattr(data, f"{kind}_label_data_paths") or (None,) * len(files)
    labels = [_optional_file(f"{kind}_label_data_paths", p) for p in label_paths]
    reward_paths = getattr(data, f"{kind}_reward_data_paths") or (None,) * len(files)
    rewards = [_optional_file(f"{kind}_reward_data_paths", p) for p in reward_paths]
    blend = _blend_weights(data, kind, [len(f) for f in files])
    needed = blend_sample_counts(blend, num_samples)
    datasets = [
        _dataset(data, f, lab, np.arange(len(f)), max(n, 1), seq_length, seed, f"{kind}{i}", rw)
        for i, (f, lab, n, rw) in enumerate(zip(files, labels, needed, rewards, strict=True))
    ]
    return _one_or_blended(datasets, blend, num_samples)


def micro_batches(
    dataset: Samples, step: int, batch: BatchLayout, dp_rank: int
) -> Iterator[torch.Tensor]:
    """This rank's micro batches of global step `step`, each (micro_batch, seq_length + 1)."""
    for rows in _micro_batch_rows(step, batch, dp_rank):
        yield torch.from_numpy(np.stack([dataset[i] for i in rows]).astype(np.int64))


def training_pairs(
    dataset: Samples, step: int, batch: BatchLayout, dp_rank: int, eod_id: int | None = None
) -> Iterator[tuple[torch.Tensor, Any]]:
    """(inputs, labels) of this rank's micro batches of global step `step`, each (micro_batch,
    seq_length), or (2 x micro_batch, seq_length) for preference pairs; with `eod_id`, no loss
    where the input is that token (eod_mask_loss). With reward files (KTO) the labels are
    (labels, rewards): each input position's reward, as GPT-NeoX aligns them."""
    for rows in _micro_batch_rows(step, batch, dp_rank):
        samples: list[Any] = [dataset[i] for i in rows]
        if isinstance(samples[0], PairwiseSample):
            inputs, labels = _pair_batch(samples)
        else:
            assert not isinstance(dataset, PairwiseDataset)
            tokens = torch.from_numpy(np.stack(samples).astype(np.int64))
            inputs = tokens[:, :-1]
            if dataset.has_labels:
                labels = torch.from_numpy(np.stack([dataset.labels(i) for i in rows]))[:, 1:]
            else:
                labels = tokens[:, 1:]
        if eod_id is not None:
            labels = labels.masked_fill(inputs == eod_id, IGNORE_INDEX)
        if getattr(dataset, "has_rewards", False):  # KTO: (labels, rewards of the inputs)
            rewards = torch.from_numpy(np.stack([dataset.rewards(i) for i in rows]))  # type: ignore[union-attr]
            yield inputs, (labels, rewards[:, :-1])
            continue
        yield inputs, labels


def _pair_batch(pairs: list[PairwiseSample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of preference pairs: the chosen rows, then the rejected ones."""
    tokens = np.stack([p.chosen for p in pairs] + [p.rejected for p in pairs]).astype(np.int64)
    labels = np.stack([p.chosen_labels for p in pairs] + [p.rejected_labels for p in pairs])
    return torch.from_numpy(tokens[:, :-1]), torch.from_numpy(labels[:, 1:].astype(np.int64))


def _micro_batch_rows(step: int, batch: BatchLayout, dp_rank: int) -> Iterator[range]:
    """The sample numbers of each of this rank's micro batches of global step `step`."""
    start = step * batch.global_batch
    for accum in range(batch.grad_accum):
        first = start + (accum * batch.data_parallel + dp_rank) * batch.micro_batch
        yield range(first, first + batch.micro_batch)
