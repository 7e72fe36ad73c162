"""GPT samples: lengths, the packed stream, epochs, shuffling and the train/valid/test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neox_data import GPTDataset, TokenFile, TokenFileWriter, split_documents

# Document i holds tokens 1000*i, 1000*i + 1, ...: every token says where it came from.
SIZES = [7, 1, 0, 12, 3, 25, 2, 9, 4, 16]


@pytest.fixture
def token_file(tmp_path: Path) -> TokenFile:
    with TokenFileWriter(tmp_path / "docs", np.int32) as writer:
        for i, size in enumerate(SIZES):
            writer.add_document(np.arange(size) + 1000 * i)
    return TokenFile(tmp_path / "docs")


def stream_of(token_file: TokenFile, doc_order: np.ndarray) -> np.ndarray:
    return np.concatenate([token_file[d] for d in doc_order]).astype(np.int64)


def epochs_of(dataset: GPTDataset, documents: np.ndarray) -> list[np.ndarray]:
    order = dataset.doc_idx
    assert len(order) % len(documents) == 0
    return np.split(order, len(order) // len(documents))


def test_every_sample_has_seq_length_plus_one_int64_tokens(token_file: TokenFile) -> None:
    dataset = GPTDataset(token_file, np.arange(len(SIZES)), num_samples=40, seq_length=8, seed=1)
    assert len(dataset) == 40
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.dtype == np.int64
        assert sample.shape == (9,)


@pytest.mark.parametrize("seq_length", [1, 5, 30])
def test_unshuffled_samples_tile_the_stream_of_shuffled_epochs(
    token_file: TokenFile, seq_length: int
) -> None:
    documents = np.array([0, 1, 2, 3, 5, 6, 8, 9])  # a subset, as a split would give
    num_samples = 25
    dataset = GPTDataset(token_file, documents, num_samples, seq_length, seed=7)
    # Each epoch is a permutation of the documents; together they cover every sample.
    epochs = epochs_of(dataset, documents)
    for epoch in epochs:
        assert sorted(epoch.tolist()) == documents.tolist()
    stream = stream_of(token_file, dataset.doc_idx)
    assert len(stream) >= num_samples * seq_length + 1
    tokens_per_epoch = sum(SIZES[d] for d in documents)
    assert (len(epochs) - 1) * tokens_per_epoch < num_samples * seq_length + 1  # none spare
    # De-overlapped, the samples in stream order are the stream itself.
    samples = [dataset.unshuffled(k) for k in range(num_samples)]
    joined = np.concatenate([s[:-1] for s in samples] + [samples[-1][-1:]])
    assert joined.tolist() == stream[: num_samples * seq_length + 1].tolist()


def test_samples_cross_document_boundaries(token_file: TokenFile) -> None:
    dataset = GPTDataset(token_file, np.array([0, 4, 6]), num_samples=3, seq_length=5, seed=0)
    stream = stream_of(token_file, dataset.doc_idx)
    sources = set()
    for k in range(3):
        sample = dataset.unshuffled(k)
        assert sample.tolist() == stream[5 * k : 5 * k + 6].tolist()
        sources.update((sample // 1000).tolist())
    # 12 tokens per epoch (7 + 3 + 2), 16 needed: samples run across all three documents.
    assert sources == {0, 4, 6}
    assert len(dataset.doc_idx) == 6


def test_served_order_is_a_shuffle_of_the_stream_samples(token_file: TokenFile) -> None:
    dataset = GPTDataset(token_file, np.arange(len(SIZES)), num_samples=30, seq_length=6, seed=3)
    served = [tuple(dataset[i]) for i in range(30)]
    in_stream_order = [tuple(dataset.unshuffled(k)) for k in range(30)]
    assert sorted(served) == sorted(in_stream_order)
    assert served != in_stream_order


def test_same_seed_same_samples_other_seed_other_order(token_file: TokenFile) -> None:
    def samples(seed: int) -> list[list[int]]:
        dataset = GPTDataset(token_file, np.arange(len(SIZES)), 30, 6, seed)
        return [dataset[i].tolist() for i in range(len(dataset))]

    assert samples(11) == samples(11)
    assert samples(11) != samples(12)


def test_epochs_are_shuffled_independently(token_file: TokenFile) -> None:
    documents = np.arange(len(SIZES))
    dataset = GPTDataset(token_file, documents, num_samples=200, seq_length=8, seed=5)
    epochs = epochs_of(dataset, documents)
    assert len(epochs) == dataset.num_epochs > 2
    assert len({tuple(e.tolist()) for e in epochs}) > 1


@pytest.mark.parametrize(
    ("documents", "problem"),
    [
        (np.array([], dtype=np.int64), "non-empty"),
        (np.array([2]), "hold no tokens"),
        (np.array([0, 10]), "document indices must be in 0..9"),
    ],
)
def test_unusable_documents_are_refused(
    token_file: TokenFile, documents: np.ndarray, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        GPTDataset(token_file, documents, num_samples=4, seq_length=4, seed=0)


def test_split_follows_gpt_neox() -> None:
    train, valid, test = split_documents(1000)
    assert (len(train), len(valid), len(test)) == (969, 30, 1)
    assert np.concatenate([train, valid, test]).tolist() == list(range(1000))
    # round(10/3) = 3 three times: GPT-NeoX takes the missing document off every boundary.
    assert [s.tolist() for s in split_documents(10, "1,1,1")] == [
        [0, 1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
    ]
    assert [len(s) for s in split_documents(10, "80/20")] == [8, 2, 0]
    assert [len(s) for s in split_documents(7, "1")] == [7, 0, 0]
    assert [len(s) for s in split_documents(0)] == [0, 0, 0]


@pytest.mark.parametrize("split", ["", "a,b", "1,2,3,4", "-1,2", "0,0", "nan,1"])
def test_bad_split_strings_are_refused(split: str) -> None:
    with pytest.raises(ValueError, match="bad split"):
        split_documents(10, split)


def test_seed_also_changes_the_sample_order_within_one_document(token_file: TokenFile) -> None:
    # One document: its epoch order cannot change, so only the sample shuffle can differ.
    def served(seed: int) -> list[list[int]]:
        dataset = GPTDataset(token_file, np.array([5]), num_samples=6, seq_length=4, seed=seed)
        return [dataset[i].tolist() for i in range(len(dataset))]

    assert sorted(served(1)) == sorted(served(2))
    assert served(1) != served(2)


def test_a_reward_file_is_read_in_step_with_the_tokens_and_checked(tmp_path: Path) -> None:
    """KTO's per-token rewards (float32, GPT-NeoX's *_reward_data_paths): each sample's are
    its tokens' rewards, 0 at padding; a file with other document sizes, or of integers, is
    refused naming it."""
    documents = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    with TokenFileWriter(tmp_path / "tokens", np.uint16) as writer:
        for doc in documents:
            writer.add_document(doc)
    with TokenFileWriter(tmp_path / "rewards", np.float32, floats=True) as writer:
        for i, doc in enumerate(documents):
            writer.add_document([float(t) / 10 * (-1) ** i for t in doc])
    tokens, rewards = TokenFile(tmp_path / "tokens"), TokenFile(tmp_path / "rewards")
    dataset = GPTDataset(
        tokens, np.arange(3), 6, 4, seed=1, cache=False, pack_impl="unpacked", rewards=rewards
    )
    assert dataset.has_rewards
    for i in range(len(dataset)):
        sample, found = dataset[i], dataset.rewards(i)
        assert found.dtype == np.float32 and found.shape == sample.shape
        doc = int(sample[0]) - 5
        sign = {0: 1, 3: -1, 5: 1}[doc]  # the first token says which document
        real = sample != 0
        assert np.allclose(found[real], sample[real] / 10 * sign) and (found[~real] == 0).all()
    with TokenFileWriter(tmp_path / "short", np.float32, floats=True) as writer:
        writer.add_document([1.0])
    with pytest.raises(ValueError, match=r"reward file .*short"):
        GPTDataset(
            tokens, np.arange(3), 6, 4, seed=1, cache=False, rewards=TokenFile(tmp_path / "short")
        )
    with pytest.raises(ValueError, match="rewards must be floats"):
        GPTDataset(tokens, np.arange(3), 6, 4, seed=1, cache=False, rewards=tokens)
    with pytest.raises(ValueError, match="float32 or float64"):
        TokenFileWriter(tmp_path / "ints", np.int32, floats=True)
