import numpy as np

from neox_train.batch import BatchLayout
from neox_train.data import micro_batches


class Numbered:
    """A stand-in dataset whose sample i is [i, i, ...]."""

    def __getitem__(self, index):
        return np.full(5, index, dtype=np.int64)


def samples(layout, step):
    out = []
    for rank in range(layout.data_parallel):
        for batch in micro_batches(Numbered(), step, layout, rank):
            assert batch.shape == (layout.micro_batch, 5)
            out.extend(batch[:, 0].tolist())
    return out


def test_a_global_step_uses_the_same_samples_for_any_layout():
    one_rank = BatchLayout(global_batch=8, micro_batch=2, grad_accum=4, data_parallel=1)
    four_ranks = BatchLayout(global_batch=8, micro_batch=2, grad_accum=1, data_parallel=4)
    two_by_two = BatchLayout(global_batch=8, micro_batch=2, grad_accum=2, data_parallel=2)
    for step in (0, 3):
        expected = list(range(8 * step, 8 * step + 8))
        for layout in (one_rank, four_ranks, two_by_two):
            assert sorted(samples(layout, step)) == expected
