"""Blending: each share within one sample of its weight at every prefix; GPT-NeoX weights."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from neox_data import BlendedDataset, blend_sample_counts, blending_index, weights_by_num_documents


def worst_prefix_error(dataset_index: np.ndarray, weights: list[float]) -> Fraction:
    """max over datasets d and prefixes n of |served_d(n) - w_d * n|, computed exactly."""
    exact = [Fraction(w) for w in weights]
    exact = [w / sum(exact) for w in exact]
    served = [0] * len(weights)
    worst = Fraction(0)
    for n, d in enumerate(dataset_index.tolist(), start=1):
        served[d] += 1
        worst = max(worst, *(abs(served[e] - w * n) for e, w in enumerate(exact)))
    return worst


def gpt_neox_greedy(weights: list[float], num_samples: int) -> np.ndarray:
    """Megatron's build_blending_indices: serve the dataset furthest behind its weight."""
    served = np.zeros(len(weights))
    order = np.empty(num_samples, dtype=np.int64)
    for i in range(num_samples):
        d = int(np.argmax(np.asarray(weights) * max(i, 1) - served))
        order[i], served[d] = d, served[d] + 1
    return order


WEIGHT_SETS = [
    [0.5, 0.5],
    [0.7, 0.2, 0.1],
    [3, 1],
    [0.1] * 10,
    [1e-3, 0.3, 0.3, 0.399],
    [0.01, 0.19, 0.2, 0.25, 0.35],
]


@pytest.mark.parametrize("weights", WEIGHT_SETS)
def test_every_prefix_is_within_one_sample_of_the_weights(weights: list[float]) -> None:
    dataset_index, dataset_sample_index = blending_index(weights, 1500)
    assert worst_prefix_error(dataset_index, weights) < 1
    for d in range(len(weights)):  # each dataset is read in order from its first sample
        assert dataset_sample_index[dataset_index == d].tolist() == list(
            range(int((dataset_index == d).sum()))
        )


def test_random_weights_stay_within_one_sample_where_the_greedy_rule_does_not() -> None:
    rng = np.random.default_rng(5)
    greedy_worst = Fraction(0)
    for _ in range(30):
        weights = (rng.random(int(rng.integers(2, 9))) ** 3 + 1e-3).tolist()
        assert worst_prefix_error(blending_index(weights, 600)[0], weights) < 1
        greedy_worst = max(greedy_worst, worst_prefix_error(gpt_neox_greedy(weights, 600), weights))
    assert greedy_worst > 1  # the check above can fail: it fails GPT-NeoX's rule


def test_sample_counts_cover_the_schedule() -> None:
    weights = [0.6, 0.3, 0.1]
    dataset_index, _ = blending_index(weights, 1001)
    counts = blend_sample_counts(weights, 1001)
    assert counts == [601, 301, 101]
    assert all(int((dataset_index == d).sum()) <= counts[d] for d in range(3))


def test_blended_dataset_reads_each_source_in_order() -> None:
    sources = [np.arange(100).reshape(50, 2) + 1000 * d for d in range(3)]
    blend = BlendedDataset(sources, [2, 1, 1], 40)
    assert len(blend) == 40
    rows = [blend[i].tolist() for i in range(40)]
    for d in range(3):
        mine = [row for row in rows if row[0] // 1000 == d]
        assert mine == sources[d][: len(mine)].tolist()
    assert sum(row[0] // 1000 == 0 for row in rows) == 20


def test_too_small_sources_and_bad_weights_are_refused() -> None:
    sources = [np.zeros((10, 2)), np.zeros((10, 2))]
    with pytest.raises(ValueError, match=r"dataset 0 holds 10 samples; .* needs 15"):
        BlendedDataset(sources, [0.75, 0.25], 20)
    with pytest.raises(ValueError, match="2 datasets but 1 weights"):
        BlendedDataset(sources, [1.0], 4)
    for weights in ([0, 0], [-1, 2], [math.nan, 1]):
        with pytest.raises(ValueError, match="non-negative"):
            blending_index(weights, 4)


def test_zero_weight_sources_are_never_read() -> None:
    dataset_index, _ = blending_index([0.0, 1.0, 0.0], 20)
    assert set(dataset_index.tolist()) == {1}


def test_weights_by_num_documents_follows_gpt_neox() -> None:
    shares = [0.8, 0.2]  # 800 and 200 documents
    boosted = [s**0.3 for s in shares]
    boosted = [b / sum(boosted) for b in boosted]
    expected = [b * (1 - s) for b, s in zip(boosted, shares, strict=True)]
    expected = [e / sum(expected) for e in expected]
    assert weights_by_num_documents([800, 200]) == pytest.approx(expected)
    assert weights_by_num_documents([800, 200])[1] > 0.5  # the small dataset is boosted
    assert weights_by_num_documents([800, 200], alpha=1.0) == pytest.approx([0.5, 0.5])
    assert weights_by_num_documents([123]) == [1.0]
