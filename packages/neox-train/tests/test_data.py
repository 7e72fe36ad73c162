import shutil

import numpy as np
import pytest
import torch

import neox_data
import neox_model
from neox_data import BlendedDataset, GPTDataset, TokenFile, TokenFileWriter
from neox_model import load_model
from neox_train import ConfigError, load_run_config
from neox_train.config.batch import BatchLayout
from neox_train.config.sections import DataConfig
from neox_train.loop.data import SampleCounts, build_datasets, micro_batches, training_pairs

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
        (dict(train_data_paths=("a", "b"), train_data_weights=(1.0,)), "1 weights for 2"),
        (dict(valid_data_paths=("a",)), "need train_data_paths"),
        (
            dict(train_data_paths=("a", "b"), train_label_data_paths=("c",)),
            "train_label_data_paths has 1 files for 2 train_data_paths",
        ),
        (
            dict(train_data_paths=("a",), valid_data_paths=("b",), valid_label_data_paths=()),
            "valid_label_data_paths has 0 files for 1 valid_data_paths",
        ),
        (dict(data_path="a", train_label_data_paths=("b",)), "needs train_data_paths"),
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


def test_pack_impl_applies_to_a_split_data_path(data_dir):
    data = DataConfig(data_path=str(data_dir / "corpus"), split="90,10,0", pack_impl="unpacked")
    splits = build_datasets(data, 32, SampleCounts(train=8, valid=4, test=4), seed=7)
    assert splits.train.has_labels and splits.valid is not None and splits.test is None
    assert splits.train.pack_impl == splits.valid.pack_impl == "unpacked"
    assert (splits.train.sample_idx == np.arange(9)).all()  # one document per sample


def test_data_and_model_agree_on_the_ignored_label():
    assert neox_data.IGNORE_INDEX == neox_model.IGNORE_INDEX == -100


def test_a_mismatched_label_list_is_refused_with_the_file_named(tmp_path):
    values = dict(train_data_paths=["a", "b"], train_label_data_paths=["a_labels"])
    config = write_config(tmp_path / "labels.yml", values)
    with pytest.raises(ConfigError, match=r"labels.yml.*1 files for 2 train_data_paths"):
        load_run_config([config])


EOD = 7


@pytest.fixture
def labelled(tmp_path):
    """Documents of tokens 1..n ending with EOD, and labels keeping the even tokens only."""
    documents = [np.append(np.arange(1, n + 1), EOD) for n in (3, 9, 5, 2, 12, 4)]
    for name, transform in (("text", lambda d: d), ("labels", even_labels)):
        with TokenFileWriter(tmp_path / name, np.int32) as writer:
            for document in documents:
                writer.add_document(transform(document))
    return TokenFile(tmp_path / "text"), TokenFile(tmp_path / "labels")


def even_labels(tokens):
    return np.where(tokens % 2 == 0, tokens, -100)


@pytest.mark.parametrize("pack_impl", ["packed", "pack_until_overflow", "unpacked"])
def test_training_pairs_carry_the_label_file_padding_and_eod_mask(labelled, pack_impl):
    text, labels = labelled
    dataset = GPTDataset(text, np.arange(len(text)), 8, 8, 3, pack_impl=pack_impl, labels=labels)
    layout = BatchLayout(global_batch=4, micro_batch=2, grad_accum=2, data_parallel=1)
    pairs = list(training_pairs(dataset, 1, layout, 0, eod_id=EOD))
    rows = [dataset[i] for i in range(4, 8)]
    for (inputs, targets), first in zip(pairs, (0, 2), strict=True):
        for row, (x, y) in enumerate(zip(inputs, targets, strict=True)):
            tokens = rows[first + row]
            real = len(tokens) if pack_impl == "packed" else last_eod(tokens) + 1
            assert x.tolist() == tokens[:-1].tolist()
            for j, label in enumerate(y.tolist()):
                keep = j + 1 < real and tokens[j + 1] % 2 == 0 and tokens[j] != EOD
                assert label == (tokens[j + 1] if keep else -100), (pack_impl, row, j)


def test_without_labels_the_pairs_are_the_shifted_tokens(labelled):
    dataset = GPTDataset(labelled[0], np.arange(len(labelled[0])), 8, 8, 3)
    layout = BatchLayout(global_batch=4, micro_batch=2, grad_accum=2, data_parallel=1)
    batches = list(micro_batches(dataset, 1, layout, 0))
    pairs = list(training_pairs(dataset, 1, layout, 0))
    assert len(pairs) == len(batches) == 2
    for tokens, (inputs, targets) in zip(batches, pairs, strict=True):
        assert torch.equal(inputs, tokens[:, :-1]) and torch.equal(targets, tokens[:, 1:])


def last_eod(tokens, eod=EOD):
    """Where a whole-document sample's real tokens end (its documents end with EOD)."""
    found = np.flatnonzero(np.asarray(tokens) == eod)
    return int(found[-1]) if len(found) else len(tokens) - 1


def real_length(sample, eod):
    """Tokens before the padding (0) of a sample of whole documents that end with `eod`."""
    if eod != 0:
        return last_eod(sample, eod) + 1
    trailing = len(sample) - len(np.trim_zeros(sample, "b"))  # the last eod, then padding
    return len(sample) - trailing + 1 if trailing else len(sample)


def write_short_documents(token_file, eod, directory):
    """The corpus cut into documents of 2 to 24 tokens plus EOD (several fit in a sample, and
    samples need padding), and their labels keeping the even tokens only."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([token_file[i] for i in range(len(token_file))]).astype(np.int64)
    tokens = tokens[tokens != eod]
    cuts = np.cumsum(rng.integers(2, 25, len(tokens) // 2))
    documents = [np.append(d, eod) for d in np.split(tokens, cuts[cuts < len(tokens)])[:400]]
    documents[5] = np.append(tokens[:60], eod)  # a long one, chopped
    for name, transform in (("short", lambda d: d), ("short_labels", even_labels)):
        with TokenFileWriter(directory / name, np.int32) as writer:
            for document in documents:
                writer.add_document(transform(document))
    return str(directory / "short"), str(directory / "short_labels")


def independent_first_loss(save, data, micro, accum, eod, eod_mask_loss):
    """Step 1's loss from the initial weights: per micro batch, -log p(label) averaged over the
    kept positions (labels worked out here from the samples' tokens), then averaged."""
    counts = SampleCounts(train=micro * accum * 3, valid=0, test=0)
    dataset = build_datasets(data, 32, counts, seed=7).train
    tokens = np.stack([dataset[i] for i in range(micro * accum)])  # step 1, served order
    _, _, model = load_model(save / "global_step0")
    with torch.no_grad():
        log_probs = model(torch.from_numpy(tokens[:, :-1])).log_softmax(-1).double()
    means, seen = [], {"padded": 0, "eod inside": 0, "ignored": 0}
    for first in range(0, micro * accum, micro):
        total, count = 0.0, 0
        for row in range(first, first + micro):
            sample = tokens[row]
            real = real_length(sample, eod)
            seen["padded"] += real < 33
            seen["eod inside"] += bool((sample[: real - 1] == eod).any())
            for j in range(32):
                target = int(sample[j + 1])
                if j + 1 < real and target % 2 == 0 and not (eod_mask_loss and sample[j] == eod):
                    total -= float(log_probs[row, j, target])
                    count += 1
                else:
                    seen["ignored"] += 1
        means.append(total / count)
    return float(np.mean(means)), seen


@pytest.mark.parametrize(
    ("pack_impl", "pipe", "eod_mask_loss"),
    [("unpacked", 0, False), ("pack_until_overflow", 2, True)],
)
def test_training_with_label_files(data_dir, tmp_path, pack_impl, pipe, eod_mask_loss):
    """Labels masking about half the tokens: step 1's loss is the masked mean computed here
    from the initial weights; a pipeline gets the labels too; the run learns."""
    eod = neox_data.build_tokenizer("HFTokenizer", str(data_dir / "tokenizer.json")).eod_id
    corpus, label_path = write_short_documents(TokenFile(data_dir / "corpus"), eod, tmp_path)
    values = tiny_config(
        data_dir, tmp_path / "run", train_micro_batch_size_per_gpu=2,
        gradient_accumulation_steps=2, train_iters=3, extra_save_iters=[0],
        pipe_parallel_size=pipe, pack_impl=pack_impl, eod_mask_loss=eod_mask_loss,
    )  # fmt: skip
    del values["data_path"], values["split"]
    values.update(train_data_paths=[corpus], train_label_data_paths=[label_path])
    run_workers([write_config(tmp_path / "labels.yml", values)], max(pipe, 1))
    trained = losses(tmp_path / "run")
    assert sorted(trained) == [1, 2, 3]
    run = load_run_config([tmp_path / "labels.yml"]).run
    expected, seen = independent_first_loss(tmp_path / "run", run.data, 2, 2, eod, eod_mask_loss)
    assert trained[1] == pytest.approx(expected, rel=1e-5)
    # the batch really has padding, ignored labels and (packed whole documents) inner eods
    assert seen["padded"] and 4 * 32 * 0.4 < seen["ignored"] < 4 * 32 * 0.9, seen
    assert seen["eod inside"] or pack_impl == "unpacked", seen
    assert trained[3] < trained[1]
