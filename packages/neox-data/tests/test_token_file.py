"""Token files: byte compatibility with the Megatron layout, atomic writing, corrupt input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from neox_data import TokenFile, TokenFileWriter, best_dtype
from neox_data.token_file import writing_together

# Documents of varied length, one of them empty, and values near the top of uint16.
DOCUMENTS = [[5, 6, 7], [], [65499, 0, 1, 2], [42], list(range(100, 160))]
DTYPE_AND_CODE = [(np.uint16, 8), (np.int32, 4)]


def write_by_hand(prefix: Path, documents: list[list[int]], dtype: type, code: int) -> None:
    """Write PREFIX.idx/.bin straight from the format description, without the library."""
    itemsize = np.dtype(dtype).itemsize
    count = len(documents)
    sizes = [len(doc) for doc in documents]
    pointers = [sum(sizes[:i]) * itemsize for i in range(count)]
    with open(f"{prefix}.idx", "wb") as idx:
        idx.write(b"MMIDIDX\x00\x00")
        idx.write(struct.pack("<Q", 1))
        idx.write(struct.pack("<B", code))
        idx.write(struct.pack("<Q", count))
        idx.write(struct.pack("<Q", count + 1))
        idx.write(struct.pack(f"<{count}i", *sizes))
        idx.write(struct.pack(f"<{count}q", *pointers))
        idx.write(struct.pack(f"<{count + 1}q", *range(count + 1)))
    with open(f"{prefix}.bin", "wb") as bin_file:
        for doc in documents:
            bin_file.write(np.array(doc, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())


@pytest.mark.parametrize(("dtype", "code"), DTYPE_AND_CODE)
def test_reads_a_hand_written_file(tmp_path: Path, dtype: type, code: int) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, dtype, code)
    tokens = TokenFile(tmp_path / "hand")
    assert tokens.dtype == np.dtype(dtype)
    assert len(tokens) == len(DOCUMENTS)
    assert tokens.sizes.dtype == np.int32
    assert tokens.sizes.tolist() == [len(doc) for doc in DOCUMENTS]
    itemsize = np.dtype(dtype).itemsize
    assert tokens.pointers.tolist() == [0, 3 * itemsize, 3 * itemsize, 7 * itemsize, 8 * itemsize]
    assert tokens.doc_idx.tolist() == list(range(len(DOCUMENTS) + 1))
    assert tokens.num_tokens == sum(len(doc) for doc in DOCUMENTS)
    for i, doc in enumerate(DOCUMENTS):
        assert tokens[i].tolist() == doc
    assert tokens[-1].tolist() == DOCUMENTS[-1]
    assert tokens.get(4, offset=10, length=5).tolist() == [110, 111, 112, 113, 114]
    assert tokens.get(2, offset=1).tolist() == [0, 1, 2]


@pytest.mark.parametrize(("dtype", "code"), DTYPE_AND_CODE)
def test_writer_output_is_byte_identical_to_the_hand_written_file(
    tmp_path: Path, dtype: type, code: int
) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, dtype, code)
    with TokenFileWriter(tmp_path / "written", dtype) as writer:
        for i, doc in enumerate(DOCUMENTS):
            # Lists and arrays of another integer dtype are both accepted.
            writer.add_document(doc if i % 2 else np.array(doc, dtype=np.int64))
    assert writer.num_documents == len(DOCUMENTS)
    for suffix in (".idx", ".bin"):
        written = (tmp_path / f"written{suffix}").read_bytes()
        assert written == (tmp_path / f"hand{suffix}").read_bytes(), suffix


def test_out_of_range_index_and_offset_raise(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    tokens = TokenFile(tmp_path / "hand")
    with pytest.raises(IndexError):
        tokens[len(DOCUMENTS)]
    with pytest.raises(IndexError):
        tokens.get(0, offset=2, length=2)


def test_an_exception_inside_the_with_block_leaves_no_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"), TokenFileWriter(out / "data", np.uint16) as w:
        w.add_document([1, 2, 3])
        raise RuntimeError("boom")
    assert list(out.iterdir()) == []


def test_nothing_appears_at_the_final_names_before_a_clean_exit(tmp_path: Path) -> None:
    with TokenFileWriter(tmp_path / "data", np.uint16) as writer:
        writer.add_document([1, 2, 3])
        assert not (tmp_path / "data.bin").exists()
        assert not (tmp_path / "data.idx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "data.idx"]


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    with TokenFileWriter(tmp_path / "data", np.uint16) as writer:
        writer.add_document([1, 2, 3])
    with pytest.raises(FileExistsError, match="--overwrite") as excinfo:
        TokenFileWriter(tmp_path / "data", np.uint16)
    assert "data.bin" in str(excinfo.value)
    with TokenFileWriter(tmp_path / "data", np.int32, overwrite=True) as writer:
        writer.add_document([9])
    replaced = TokenFile(tmp_path / "data")
    assert replaced.dtype == np.int32
    assert replaced[0].tolist() == [9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "data.idx"]


@pytest.mark.parametrize(
    ("dtype", "tokens", "value"),
    [
        (np.uint16, [1, 65536], "65536"),
        (np.uint16, [-1], "-1"),
        (np.int32, [2**40], str(2**40)),
        (np.int64, [2**70], str(2**70)),
    ],
)
def test_tokens_that_do_not_fit_the_dtype_are_refused(
    tmp_path: Path, dtype: type, tokens: list[int], value: str
) -> None:
    with TokenFileWriter(tmp_path / "data", dtype) as writer:
        with pytest.raises(ValueError, match=f"token value {value} does not fit"):
            writer.add_document(tokens)
        writer.add_document([1])
    assert TokenFile(tmp_path / "data").sizes.tolist() == [1]


def test_non_integer_tokens_and_dtypes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token dtype"):
        TokenFileWriter(tmp_path / "data", np.float32)
    with (
        TokenFileWriter(tmp_path / "data", np.int32) as writer,
        pytest.raises(ValueError, match="integers"),
    ):
        writer.add_document([1.5, 2.0])


def corrupt(path: Path, offset: int, data: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda idx: corrupt(idx, 0, b"NOTANIDX!"), "wrong magic"),
        (lambda idx: corrupt(idx, 9, struct.pack("<Q", 2)), "unsupported version 2"),
        (lambda idx: corrupt(idx, 17, struct.pack("<B", 42)), "unknown dtype code 42"),
        (lambda idx: idx.write_bytes(idx.read_bytes()[:20]), "truncated header"),
        (lambda idx: idx.write_bytes(idx.read_bytes()[:-8]), "truncated"),
    ],
)
def test_a_damaged_index_is_reported_with_its_name(tmp_path: Path, damage, problem: str) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    damage(tmp_path / "hand.idx")
    with pytest.raises(ValueError, match=problem) as excinfo:
        TokenFile(tmp_path / "hand")
    assert "hand.idx" in str(excinfo.value)


def test_a_truncated_bin_is_reported(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    data = tmp_path / "hand.bin"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"hand\.bin: truncated"):
        TokenFile(tmp_path / "hand")


def test_empty_token_file_round_trips(tmp_path: Path) -> None:
    with TokenFileWriter(tmp_path / "empty", np.uint16):
        pass
    tokens = TokenFile(tmp_path / "empty")
    assert len(tokens) == 0
    assert tokens.num_tokens == 0
    assert tokens.doc_idx.tolist() == [0]


@pytest.mark.parametrize(
    ("vocab_size", "dtype"), [(50277, np.uint16), (65499, np.uint16), (65500, np.int32)]
)
def test_best_dtype_follows_gpt_neox(vocab_size: int, dtype: type) -> None:
    assert best_dtype(vocab_size) == np.dtype(dtype)


def test_a_bin_longer_than_its_index_is_reported(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    data = tmp_path / "hand.bin"
    data.write_bytes(data.read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match=r"hand\.bin: .*longer than its index says") as excinfo:
        TokenFile(tmp_path / "hand")
    assert "hand.idx describes 136 bytes" in str(excinfo.value)


def test_a_bin_of_another_dtype_is_reported(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    write_by_hand(tmp_path / "wide", DOCUMENTS, np.int32, 4)
    (tmp_path / "hand.bin").write_bytes((tmp_path / "wide.bin").read_bytes())
    with pytest.raises(ValueError, match=r"hand\.bin: truncated or foreign token data"):
        TokenFile(tmp_path / "hand")


def test_a_missing_bin_is_reported(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    (tmp_path / "hand.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"hand\.bin"):
        TokenFile(tmp_path / "hand")


HEADER_BYTES = 34  # magic 9, version 8, dtype 1, counts 8 + 8
SIZES_AT, POINTERS_AT = HEADER_BYTES, HEADER_BYTES + 4 * len(DOCUMENTS)
DOC_IDX_AT = POINTERS_AT + 8 * len(DOCUMENTS)


@pytest.mark.parametrize(
    ("offset", "data", "problem"),
    [
        (SIZES_AT + 4, struct.pack("<i", -1), "negative sequence size"),
        (POINTERS_AT + 8, struct.pack("<q", 4), "pointers do not follow the sizes"),
        (POINTERS_AT, struct.pack("<q", 2), "pointers do not follow the sizes"),
        (DOC_IDX_AT + 8 * len(DOCUMENTS), struct.pack("<q", 3), "doc_idx must run from 0"),
        (DOC_IDX_AT + 16, struct.pack("<q", 0), "doc_idx decreases"),
    ],
)
def test_an_inconsistent_index_is_reported(
    tmp_path: Path, offset: int, data: bytes, problem: str
) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    corrupt(tmp_path / "hand.idx", offset, data)
    with pytest.raises(ValueError, match=problem) as excinfo:
        TokenFile(tmp_path / "hand")
    assert "hand.idx: not a valid token index" in str(excinfo.value)


def test_writing_together_publishes_all_or_nothing(tmp_path: Path) -> None:
    first, second = (
        TokenFileWriter(tmp_path / "a", np.uint16),
        TokenFileWriter(tmp_path / "b", np.uint16),
    )
    with pytest.raises(KeyError), writing_together([first, second]):
        first.add_document([1, 2])
        second.add_document([3])
        raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []
    with writing_together([first, second]):
        first.add_document([1, 2])
        second.add_document([3])
    assert TokenFile(tmp_path / "a")[0].tolist() == [1, 2]
    assert TokenFile(tmp_path / "b")[0].tolist() == [3]


def test_token_files_append_in_bulk_keeping_document_boundaries(tmp_path: Path) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, np.uint16, 8)
    # A Megatron file whose first document has two sequences (sentence-split data).
    corrupt(tmp_path / "hand.idx", DOC_IDX_AT + 8, struct.pack("<q", 2))
    corrupt(tmp_path / "hand.idx", DOC_IDX_AT + 16, struct.pack("<q", 2))
    source = TokenFile(tmp_path / "hand")
    with TokenFileWriter(tmp_path / "joined", np.uint16) as writer:
        writer.add_document([7])
        writer.add_token_file(source)
        writer.add_token_file(source)
    joined = TokenFile(tmp_path / "joined")
    assert joined.sizes.tolist() == [1, *source.sizes.tolist() * 2]
    assert joined.doc_idx.tolist() == [0, 1, 3, 3, 4, 5, 6, 8, 8, 9, 10, 11]
    assert [joined[i].tolist() for i in range(1, 6)] == DOCUMENTS
    with (
        TokenFileWriter(tmp_path / "wide", np.int32) as writer,
        pytest.raises(ValueError, match="dtype"),
    ):
        writer.add_token_file(source)


@pytest.mark.parametrize(("dtype", "code"), DTYPE_AND_CODE)
def test_max_id_is_the_largest_token_of_the_file(tmp_path: Path, dtype: type, code: int) -> None:
    write_by_hand(tmp_path / "hand", DOCUMENTS, dtype, code)
    tokens = TokenFile(tmp_path / "hand")
    assert tokens.max_id() == 65499
    assert tokens.id_range() == (0, 65499)


def test_a_label_file_range_includes_its_negative_labels(tmp_path: Path) -> None:
    with TokenFileWriter(tmp_path / "labels", np.int32) as writer:
        writer.add_document([-100, -100, 7, 3])
        writer.add_document([-100, 12])
    assert TokenFile(tmp_path / "labels").id_range() == (-100, 12)


def test_an_empty_file_has_no_max_id(tmp_path: Path) -> None:
    with TokenFileWriter(tmp_path / "empty", np.uint16):
        pass
    assert TokenFile(tmp_path / "empty").max_id() is None


def test_max_id_is_scanned_once_and_cached_beside_the_file(tmp_path: Path, monkeypatch) -> None:
    with TokenFileWriter(tmp_path / "data", np.uint16) as writer:
        writer.add_documents(np.arange(5000) % 4000, [1000] * 5)
    assert TokenFile(tmp_path / "data").max_id() == 3999
    [cached] = tmp_path.glob("data_ids_*_range.npy")

    def no_scan(self: TokenFile) -> None:
        raise AssertionError("scanned the tokens again")

    monkeypatch.setattr(TokenFile, "_scan_id_range", no_scan)
    assert TokenFile(tmp_path / "data").max_id() == 3999  # another process, a later run
    assert list(tmp_path.glob("data_ids_*_range.npy")) == [cached]


def test_a_rewritten_file_is_scanned_again(tmp_path: Path) -> None:
    """Same name, same size, rewritten within the file system's timestamp resolution."""
    for top in (3999, 17, 3999):
        with TokenFileWriter(tmp_path / "data", np.uint16, overwrite=True) as writer:
            writer.add_documents(np.arange(4000) % (top + 1), [4000])
        assert TokenFile(tmp_path / "data").max_id() == top
