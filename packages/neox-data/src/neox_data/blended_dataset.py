"""Weighted blending of several datasets into one sample order (GPT-NeoX's ``BlendableDataset``).

With weights ``w`` (normalised to sum to 1), after the first ``n`` samples dataset ``d`` has
served ``floor(w[d] * n)`` or ``ceil(w[d] * n)`` of them, for every ``n``: its share is within
one sample of its weight at every prefix of the order. GPT-NeoX's greedy rule (serve the
dataset furthest behind, Megatron's ``build_blending_indices``) can fall almost two samples
behind with several datasets. Here each dataset's ``j``-th sample is a unit job that may not
run before step ``floor((j - 1) / w) + 1`` nor after step ``ceil(j / w)``; earliest-deadline-
first meets every such window (Tijdeman's "chairman assignment", 1980, shows a schedule
exists, and EDF finds one whenever one exists). Weights are used as exact fractions, so no
rounding error moves a window.

The schedule costs about a microsecond per sample in pure Python.
"""

from __future__ import annotations

import array
import heapq
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np


class SampleSource(Protocol):
    """A dataset of samples: what `BlendedDataset` blends (e.g. `GPTDataset`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


@runtime_checkable
class LabelledSource(SampleSource, Protocol):
    """A dataset whose samples have labels besides their tokens (as `GPTDataset.labels`)."""

    @property
    def has_labels(self) -> bool: ...

    def labels(self, index: int) -> np.ndarray: ...


def _integer_weights(weights: Sequence[float]) -> tuple[list[int], int]:
    """Integers proportional to ``weights`` exactly, and their sum."""
    if not weights:
        raise ValueError("at least one dataset weight is needed")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative, with a positive sum: {weights}")
    fractions = [Fraction(w) for w in weights]
    scale = math.lcm(*(f.denominator for f in fractions))
    amounts = [int(f * scale) for f in fractions]
    return amounts, sum(amounts)


def blend_sample_counts(weights: Sequence[float], num_samples: int) -> list[int]:
    """Samples each dataset must provide for a blend of ``num_samples``: ``ceil(w * n)``."""
    amounts, total = _integer_weights(weights)
    return [-(-a * num_samples // total) for a in amounts]


def blending_index(weights: Sequence[float], num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """For each blended sample: which dataset serves it, and that dataset's sample number."""
    if num_samples < 0:
        raise ValueError(f"num_samples must not be negative, got {num_samples}")
    amounts, total = _integer_weights(weights)
    if len(amounts) > np.iinfo(np.int16).max:
        raise ValueError(f"at most {np.iinfo(np.int16).max} datasets can be blended")
    dataset_index = np.frombuffer(_schedule(amounts, total, num_samples), dtype=np.int16)
    dataset_sample_index = np.empty(num_samples, dtype=np.int64)
    for d in range(len(amounts)):
        chosen = dataset_index == d
        dataset_sample_index[chosen] = np.arange(int(chosen.sum()))
    return dataset_index, dataset_sample_index


def _schedule(amounts: list[int], total: int, num_samples: int) -> array.array:
    """Earliest-deadline-first over the quota windows (steps count from 1)."""
    served = [0] * len(amounts)
    order = array.array("h")
    waiting = [(1, d) for d, amount in enumerate(amounts) if amount]  # (release step, dataset)
    ready: list[tuple[int, int]] = []  # (deadline step, dataset)
    for step in range(1, num_samples + 1):
        while waiting and waiting[0][0] <= step:
            d = heapq.heappop(waiting)[1]
            deadline = -(-(served[d] + 1) * total // amounts[d])
            heapq.heappush(ready, (deadline, d))
        deadline, d = heapq.heappop(ready)
        assert deadline >= step, "EDF missed a quota window"
        order.append(d)
        served[d] += 1
        heapq.heappush(waiting, (served[d] * total // amounts[d] + 1, d))
    return order


def weights_by_num_documents(num_documents: Sequence[int], alpha: float = 0.3) -> list[float]:
    """GPT-NeoX's ``weight_by_num_documents`` weights, with ``weighted_sampler_alpha`` = alpha.

    A dataset's share of documents ``q`` becomes ``q ** alpha`` (normalised), then is scaled
    by ``1 - q`` and normalised again: smaller datasets are sampled more than their size
    alone would give (XLM-R's multilingual sampling, arXiv:1911.02116).
    """
    if len(num_documents) == 1:
        return [1.0]
    if any(n < 0 for n in num_documents) or sum(num_documents) <= 0:
        raise ValueError(
            f"document counts must be non-negative with a positive sum: {num_documents}"
        )
    total_documents = sum(num_documents)
    shares = [n / total_documents for n in num_documents]
    boosted = [share**alpha for share in shares]
    boosted = [b / sum(boosted) for b in boosted]
    weights = [b * (1 - share) for b, share in zip(boosted, shares, strict=True)]
    return [w / sum(weights) for w in weights]


class BlendedDataset:
    """``num_samples`` samples drawn from ``datasets`` in proportion to ``weights``.

    Sample ``i`` is sample ``dataset_sample_index[i]`` of ``datasets[dataset_index[i]]``; each
    dataset is read in its own order from its first sample. Dataset ``d`` must hold at least
    ``blend_sample_counts(weights, num_samples)[d]`` samples.
    """

    def __init__(
        self, datasets: Sequence[SampleSource], weights: Sequence[float], num_samples: int
    ) -> None:
        if len(datasets) != len(weights):
            raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
        self.dataset_index, self.dataset_sample_index = blending_index(weights, num_samples)
        self.datasets = list(datasets)
        self.weights = [w / sum(weights) for w in weights]
        needed = blend_sample_counts(weights, num_samples)
        for d, (dataset, count) in enumerate(zip(self.datasets, needed, strict=True)):
            if len(dataset) < count:
                raise ValueError(
                    f"dataset {d} holds {len(dataset)} samples; a blend of {num_samples} with "
                    f"weight {self.weights[d]:.4g} needs {count}: build it with at least that many"
                )

    def __len__(self) -> int:
        return len(self.dataset_index)

    def __getitem__(self, index: int) -> np.ndarray:
        dataset, sample = self._locate(index)
        return dataset[sample]

    @property
    def has_labels(self) -> bool:
        """Whether any blended dataset's labels can differ from its tokens."""
        return any(isinstance(d, LabelledSource) and d.has_labels for d in self.datasets)

    def labels(self, index: int) -> np.ndarray:
        """Sample ``index``'s labels: its dataset's, or its tokens where that has none."""
        dataset, sample = self._locate(index)
        if isinstance(dataset, LabelledSource):
            return dataset.labels(sample)
        return np.array(dataset[sample], dtype=np.int64)

    @property
    def has_rewards(self) -> bool:
        """Whether every blended dataset has a reward file."""
        return all(getattr(d, "has_rewards", False) for d in self.datasets)

    def rewards(self, index: int) -> np.ndarray:
        """Sample ``index``'s per-token rewards (its dataset's reward file)."""
        dataset, sample = self._locate(index)
        return dataset.rewards(sample)  # type: ignore[attr-defined]

    def _locate(self, index: int) -> tuple[SampleSource, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        return self.datasets[int(self.dataset_index[index])], int(self.dataset_sample_index[index])
