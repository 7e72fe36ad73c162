import shutil

import numpy as np
import pytest

from neox_data import BlendedDataset, TokenFile
from neox_train.batch import BatchLayout
from neox_train.data import SampleCounts, build_datasets, micro_batches
from neox_train.run_config import DataConfig

from conftest import losses, run_workers, tiny_config, write_config


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


def test_files_per_purpose_are_read_whole_and_blended(data_dir, tmp_path):
    """train_data_paths (blended by train_data_weights), valid_data_paths, no test files."""
    for suffix in (".bin", ".idx"):  # a second training file, with its own documents
        shutil.copyfile(data_dir / f"corpus{suffix}", tmp_path / f"other{suffix}")
    first, second = str(data_dir / "corpus"), str(tmp_path / "other")
    data = DataConfig(
        train_data_paths=(first, second),
        train_data_weights=(3.0, 1.0),
        valid_data_paths=(first,),
    )
    splits = build_datasets(data, 32, SampleCounts(train=400, valid=16, test=16), seed=7)
    assert isinstance(splits.train, BlendedDataset) and len(splits.train) == 400
    assert np.bincount(splits.train.dataset_index).tolist() == [300, 100]
    assert splits.valid is not None and len(splits.valid) >= 16 and splits.test is None
    # each file is read whole: its samples are the file's own, not a split's share
    whole = TokenFile(first)
    sample = splits.train[int(np.argmax(splits.train.dataset_index == 0))]
    assert sample.shape == (33,) and set(sample.tolist()) <= set(
        np.concatenate([whole[i] for i in range(len(whole))]).tolist()
    )
    by_documents = build_datasets(
        DataConfig(train_data_paths=(first, second), weight_by_num_documents=True),
        32,
        SampleCounts(train=400, valid=0, test=0),
        seed=7,
    )
    assert np.bincount(by_documents.train.dataset_index).tolist() == [200, 200]  # equal sizes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(data_path="a", train_data_paths=("b",)), "not both"),
        (dict(train_data_paths=("a", "b"), train_data_weights=(1.0,)), "1 weights for 2"),
        (dict(valid_data_paths=("a",)), "need train_data_paths"),
    ],
)
def test_files_per_purpose_are_checked(values, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**values)


def test_training_on_files_per_purpose(data_dir, tmp_path):
    values = tiny_config(
        data_dir, tmp_path / "run", train_micro_batch_size_per_gpu=2, train_iters=3,
    )  # fmt: skip
    del values["data_path"], values["split"]
    corpus = str(data_dir / "corpus")
    values.update(train_data_paths=[corpus, corpus], train_data_weights=[1, 2],
                  valid_data_paths=[corpus])  # fmt: skip
    out = run_workers([write_config(tmp_path / "files.yml", values)], 1)
    assert "validation loss after training at step 3" in out
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]
