"""Pairwise (preference) data: both sides of every sample come from the same document, padded
and labelled as unpacked samples; files that do not pair up are refused naming them."""

from pathlib import Path

import numpy as np
import pytest

from neox_data import TokenFile, TokenFileWriter
from neox_data.gpt_dataset import IGNORE_INDEX
from neox_data.pairwise_dataset import PairwiseDataset

SEQ = 8
# chosen and rejected lengths per document: some shorter than a sample, some longer
CHOSEN = (3, 12, 5, 9, 2, 7)
REJECTED = (4, 6, 10, 3, 2, 8)


def write(path: Path, sizes, offset: int, labels: bool = False) -> TokenFile:
    """Document i holds offset + 100 i, offset + 100 i + 1, ...; a label file hides the first
    token of each document (a prompt)."""
    with TokenFileWriter(path, np.int32) as writer:
        for i, size in enumerate(sizes):
            tokens = np.arange(size) + offset + 100 * i
            if labels:
                tokens[0] = -100
            writer.add_document(tokens)
    return TokenFile(path)


@pytest.fixture
def files(tmp_path):
    return (
        write(tmp_path / "pos", CHOSEN, 10_000),
        write(tmp_path / "neg", REJECTED, 20_000),
        write(tmp_path / "pos_label", CHOSEN, 10_000, labels=True),
        write(tmp_path / "neg_label", REJECTED, 20_000, labels=True),
    )


def document_of(tokens: np.ndarray, offset: int) -> int:
    return int((tokens[0] - offset) // 100)


def test_both_sides_of_a_sample_are_the_same_documents_pair(files, tmp_path):
    pos, neg, pos_labels, neg_labels = files
    data = PairwiseDataset(
        pos,
        neg,
        np.arange(len(CHOSEN)),
        15,  # more than one pass over the 6 pairs
        SEQ,
        seed=3,
        cache_dir=tmp_path / "cache",
        pos_labels=pos_labels,
        neg_labels=neg_labels,
    )
    assert len(data) == 15
    seen = set()
    for k in range(len(data)):
        sample = data[k]
        doc = document_of(sample.chosen, 10_000)
        assert document_of(sample.rejected, 20_000) == doc
        seen.add(doc)
        for tokens, labels, sizes, offset in (
            (sample.chosen, sample.chosen_labels, CHOSEN, 10_000),
            (sample.rejected, sample.rejected_labels, REJECTED, 20_000),
        ):
            assert tokens.shape == labels.shape == (SEQ + 1,)
            kept = min(sizes[doc], SEQ + 1)
            assert tokens[:kept].tolist() == list(
                range(offset + 100 * doc, offset + 100 * doc + kept)
            )
            assert (tokens[kept:] == 0).all()  # padding
            assert labels[0] == IGNORE_INDEX  # the prompt token, hidden by the label file
            assert labels[1:kept].tolist() == tokens[1:kept].tolist()
            assert (labels[kept:] == IGNORE_INDEX).all()
    assert seen == set(range(len(CHOSEN)))


def test_allow_chopped_false_leaves_out_a_pair_with_a_side_too_long(files, tmp_path):
    pos, neg, _, _ = files
    data = PairwiseDataset(
        pos, neg, np.arange(len(CHOSEN)), 12, SEQ, seed=1, cache=False, allow_chopped=False
    )
    docs = {document_of(data[k].chosen, 10_000) for k in range(len(data))}
    # 1 (12 chosen tokens) and 2 (10 rejected) are longer than a sample; 3's 9 fill one exactly
    assert docs == {0, 3, 4, 5}


def test_files_that_do_not_pair_up_are_refused(tmp_path):
    pos = write(tmp_path / "pos", CHOSEN, 10_000)
    short = write(tmp_path / "short", REJECTED[:-1], 20_000)
    with pytest.raises(ValueError, match=r"holds 6 documents and .*short 5: pairwise data"):
        PairwiseDataset(pos, short, np.arange(5), 4, SEQ, seed=0, cache=False)
    one_sided = write(tmp_path / "one_sided", (4, 0, 10, 3, 2, 8), 20_000)
    with pytest.raises(ValueError, match="document 1 is empty on one side only"):
        PairwiseDataset(pos, one_sided, np.arange(6), 4, SEQ, seed=0, cache=False)
