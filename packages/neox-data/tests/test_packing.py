"""Whole-document packings (pack_until_overflow, unpacked), padding and label files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neox_data import IGNORE_INDEX, BlendedDataset, GPTDataset, TokenFile, TokenFileWriter
from neox_data.gpt_dataset import pack_until_overflow
from neox_data.index_cache import CacheSource

# Document i holds tokens 1000 * (i + 1) + j: never 0 (the padding), and says where it came from.
SIZES = [3, 5, 2, 9, 4, 1, 0, 6, 7, 2]
SEQ_LENGTH = 6  # samples of 7 tokens: document 3 (9 tokens) is too long, document 8 just fits
CAPACITY = SEQ_LENGTH + 1


def write(prefix: Path, documents: list[np.ndarray], dtype: type = np.int32) -> TokenFile:
    with TokenFileWriter(prefix, dtype) as writer:
        for document in documents:
            writer.add_document(document)
    return TokenFile(prefix)


def document(i: int) -> np.ndarray:
    return np.arange(SIZES[i]) + 1000 * (i + 1)


@pytest.fixture
def token_file(tmp_path: Path) -> TokenFile:
    return write(tmp_path / "docs", [document(i) for i in range(len(SIZES))])


def even_labels(tokens: np.ndarray) -> np.ndarray:
    """The label file of the tests: odd tokens carry no loss."""
    return np.where(tokens % 2 == 0, tokens, IGNORE_INDEX)


@pytest.fixture
def label_file(tmp_path: Path) -> TokenFile:
    return write(tmp_path / "labels", [even_labels(document(i)) for i in range(len(SIZES))])


def document_order(documents: list[int], passes: int, seed: int) -> list[int]:
    """The order the whole-document packings use: a fresh shuffle of the documents per pass."""
    rng = np.random.RandomState(seed)
    return [documents[j] for _ in range(passes) for j in rng.permutation(len(documents))]


def padded(pieces: list[np.ndarray], pad: int) -> list[int]:
    joined = np.concatenate(pieces)[:CAPACITY].tolist() if pieces else []
    return joined + [pad] * (CAPACITY - len(joined))


def reference_pack_until_overflow(order: list[int], num_samples: int) -> list[list[int]]:
    """GPT-NeoX's loop: documents join the sample until one would overflow it."""
    samples: list[list[int]] = []
    current: list[int] = []
    used = 0
    for doc in order:
        length = min(SIZES[doc], CAPACITY)
        if current and used + length > CAPACITY:
            samples.append(current)
            current, used = [], 0
        current.append(doc)
        used += length
    return samples[:num_samples]


def served(samples: list[list[int]], seed: int) -> list[list[int]]:
    return [samples[k] for k in np.random.RandomState(seed + 1).permutation(len(samples))]


def usable(allow_chopped: bool) -> list[int]:
    return [i for i, s in enumerate(SIZES) if s > 0 and (allow_chopped or s <= CAPACITY)]


@pytest.mark.parametrize("allow_chopped", [True, False])
def test_pack_until_overflow_samples_are_whole_documents_until_the_next_overflows(
    token_file: TokenFile, allow_chopped: bool
) -> None:
    num_samples, seed = 12, 5
    dataset = GPTDataset(
        token_file,
        np.arange(len(SIZES)),
        num_samples,
        SEQ_LENGTH,
        seed,
        pack_impl="pack_until_overflow",
        allow_chopped=allow_chopped,
        cache=False,
    )
    order = document_order(usable(allow_chopped), passes=10, seed=seed)
    expected = served(reference_pack_until_overflow(order, num_samples), seed)
    assert len(dataset) == num_samples
    for i, docs in enumerate(expected):
        assert dataset[i].tolist() == padded([document(d) for d in docs], 0), i
        ignored_from = min(sum(SIZES[d] for d in docs), CAPACITY)
        tokens = padded([document(d) for d in docs], IGNORE_INDEX)
        assert dataset.labels(i).tolist() == tokens
        assert (dataset.labels(i)[ignored_from:] == IGNORE_INDEX).all()
    seen = {int(t) // 1000 - 1 for i in range(num_samples) for t in dataset[i] if t}
    assert (3 in seen) is allow_chopped  # the 9-token document: cut, or never used
    assert 6 not in seen  # the empty one


def test_a_chopped_document_fills_its_sample_alone(token_file: TokenFile) -> None:
    dataset = GPTDataset(
        token_file, np.array([0, 3]), 6, SEQ_LENGTH, 0, pack_impl="pack_until_overflow"
    )
    chopped = document(3)[:CAPACITY].tolist()  # 9 tokens cut to 7, nothing else fits
    short = [padded([document(0)] * n, 0) for n in (1, 2)]  # 3 or 6 tokens, then padding
    samples = [dataset[i].tolist() for i in range(len(dataset))]
    assert all(s == chopped or s in short for s in samples), samples
    assert chopped in samples and any(s in short for s in samples)


@pytest.mark.parametrize("allow_chopped", [True, False])
def test_unpacked_samples_are_one_document_each_over_shuffled_passes(
    token_file: TokenFile, allow_chopped: bool
) -> None:
    documents = np.array([0, 1, 3, 4, 6, 7, 8])  # a subset, as a split gives; 6 is empty
    num_samples, seed = 13, 9
    dataset = GPTDataset(
        token_file,
        documents,
        num_samples,
        SEQ_LENGTH,
        seed,
        pack_impl="unpacked",
        allow_chopped=allow_chopped,
    )
    kept = [d for d in documents.tolist() if d in usable(allow_chopped)]
    order = document_order(kept, passes=4, seed=seed)[:num_samples]
    expected = served([[d] for d in order], seed)
    for i, docs in enumerate(expected):
        assert dataset[i].tolist() == padded([document(docs[0])], 0), i
        assert dataset.labels(i).tolist() == padded([document(docs[0])], IGNORE_INDEX)
    assert dataset.num_epochs == -(-num_samples // len(kept))
    # each pass uses every kept document once
    first_pass = [int(d) for d in dataset.doc_idx[: len(kept)]]
    assert sorted(first_pass) == kept


def test_documents_that_cannot_make_a_sample_are_refused(token_file: TokenFile) -> None:
    with pytest.raises(ValueError, match=r"longer than seq_length.*set allow_chopped"):
        GPTDataset(
            token_file, np.array([3, 6]), 4, SEQ_LENGTH, 0, pack_impl="unpacked",
            allow_chopped=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="pack_impl must be one of packed, pack_until_overflow"):
        GPTDataset(token_file, np.arange(3), 4, SEQ_LENGTH, 0, pack_impl="packd")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_packing_matches_the_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = 50
    lengths = rng.integers(1, capacity + 1, 5000)
    starts = pack_until_overflow(lengths, capacity, 300)
    expected, used = [0], 0
    for position, length in enumerate(lengths.tolist()):
        if used + length > capacity:
            expected.append(position)
            used = 0
        used += length
    assert starts.tolist() == expected[:301]
    with pytest.raises(ValueError, match="samples from the stream, 100000 needed"):
        pack_until_overflow(lengths, capacity, 100_000)


@pytest.mark.parametrize("pack_impl", ["pack_until_overflow", "unpacked"])
def test_whole_document_indexes_are_deterministic_and_cached_apart(
    token_file: TokenFile, pack_impl: str
) -> None:
    def build(seed: int, allow_chopped: bool = True) -> GPTDataset:
        return GPTDataset(
            token_file, np.arange(len(SIZES)), 10, SEQ_LENGTH, seed,
            pack_impl=pack_impl, allow_chopped=allow_chopped,  # type: ignore[arg-type]
        )  # fmt: skip

    first = build(3)
    assert first.index_source is CacheSource.BUILT
    again = build(3)
    assert again.index_source is CacheSource.LOADED
    assert [again[i].tolist() for i in range(10)] == [first[i].tolist() for i in range(10)]
    assert [build(4)[i].tolist() for i in range(10)] != [first[i].tolist() for i in range(10)]
    assert build(3, allow_chopped=False).index_source is CacheSource.BUILT
    packed = GPTDataset(token_file, np.arange(len(SIZES)), 10, SEQ_LENGTH, 3)
    assert packed.index_source is CacheSource.BUILT  # none of the three reuses another's files
    names = sorted(p.name for p in token_file.prefix.parent.glob("docs_train_*_doc_idx.npy"))
    assert len(names) == 4
    assert sum(f"_3s_{pack_impl}pi_ac_" in n for n in names) == 1
    assert sum(f"_3s_{pack_impl}pi_" in n and "_ac_" not in n for n in names) == 1
    assert sum(n.startswith("docs_train_indexmap_10ns_6sl_3s_") and "pi" not in n for n in names)


@pytest.mark.parametrize("pack_impl", ["packed", "pack_until_overflow", "unpacked"])
def test_label_file_is_read_in_step_with_the_tokens(
    token_file: TokenFile, label_file: TokenFile, pack_impl: str
) -> None:
    dataset = GPTDataset(
        token_file, np.arange(len(SIZES)), 20, SEQ_LENGTH, 1,
        pack_impl=pack_impl, labels=label_file,  # type: ignore[arg-type]
    )  # fmt: skip
    assert dataset.has_labels
    masked = 0
    for i in range(len(dataset)):
        tokens, labels = dataset[i], dataset.labels(i)
        real = tokens != 0
        assert labels[real].tolist() == even_labels(tokens[real]).tolist()
        assert (labels[~real] == IGNORE_INDEX).all()
        masked += int((labels == IGNORE_INDEX).sum())
    assert masked > 0


def test_without_a_label_file_packed_labels_are_the_tokens(token_file: TokenFile) -> None:
    dataset = GPTDataset(token_file, np.arange(len(SIZES)), 8, SEQ_LENGTH, 1)
    assert not dataset.has_labels
    assert all(dataset.labels(i).tolist() == dataset[i].tolist() for i in range(8))


def test_a_label_file_that_does_not_match_is_refused(tmp_path: Path, token_file: TokenFile) -> None:
    shorter = [even_labels(document(i)) for i in range(len(SIZES))]
    shorter[4] = shorter[4][:-1]
    wrong_size = write(tmp_path / "wrong_size", shorter)
    with pytest.raises(ValueError, match=r"wrong_size for token file .*docs: document 4 has 3"):
        GPTDataset(token_file, np.arange(3), 4, SEQ_LENGTH, 0, labels=wrong_size)
    fewer = write(tmp_path / "fewer", [even_labels(document(i)) for i in range(4)])
    with pytest.raises(ValueError, match="4 documents of labels for 10 documents of tokens"):
        GPTDataset(token_file, np.arange(3), 4, SEQ_LENGTH, 0, labels=fewer)
    unsigned = write(tmp_path / "unsigned", [document(i) for i in range(len(SIZES))], np.uint16)
    with pytest.raises(ValueError, match=r"signed integers .* it holds uint16"):
        GPTDataset(token_file, np.arange(3), 4, SEQ_LENGTH, 0, labels=unsigned)


def test_blends_read_labels_from_each_dataset(token_file: TokenFile, label_file: TokenFile) -> None:
    labelled = GPTDataset(
        token_file, np.arange(len(SIZES)), 10, SEQ_LENGTH, 1, labels=label_file, cache=False
    )
    plain = np.arange(100, 170).reshape(10, 7)
    blend = BlendedDataset([labelled, plain], [1, 1], 20)
    assert blend.has_labels
    assert not BlendedDataset([plain, plain], [1, 1], 20).has_labels
    for i in range(20):
        tokens, labels = blend[i], blend.labels(i)
        if int(blend.dataset_index[i]) == 0:
            assert labels.tolist() == even_labels(tokens).tolist()
        else:
            assert labels.tolist() == tokens.tolist()
