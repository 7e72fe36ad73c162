"""Corpus readers: jsonl, jsonl.zst and txt files, comma lists and globs, clear errors."""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from neox_data import Document, MissingDependencyError, iter_documents
from neox_data.corpus import ReadStats


def test_jsonl_yields_each_key_of_each_record_in_order(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"text": "one", "title": "first", "meta": 1}, {"title": "second", "text": "two"}],
    )
    documents = list(iter_documents(path, keys=("text", "title")))
    assert [(d.key, d.text, d.line) for d in documents] == [
        ("text", "one", 1),
        ("title", "first", 1),
        ("text", "two", 2),
        ("title", "second", 2),
    ]
    assert all(d.source == path for d in documents)


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n\n   \n{"text": "y"}\n', encoding="utf-8")
    assert [(d.text, d.line) for d in iter_documents(path)] == [("x", 1), ("y", 4)]


@pytest.mark.parametrize(
    ("third_line", "problem"),
    [
        ('{"text": "unterminated', "malformed JSON"),
        ('{"body": "no text key"}', "missing key 'text'"),
        ('{"text": 17}', "key 'text' holds int"),
        ('["a", "list"]', "expected a JSON object"),
    ],
)
def test_a_bad_line_is_reported_with_file_and_line_number(
    tmp_path: Path, third_line: str, problem: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n' + third_line + "\n", encoding="utf-8")
    documents = iter_documents(path)
    assert next(documents).text == "a"
    assert next(documents).text == "b"
    with pytest.raises(ValueError, match=problem) as excinfo:
        next(documents)
    assert f"{path}:3:" in str(excinfo.value)


def test_txt_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "story.txt"
    path.write_text("line one\nline two\n", encoding="utf-8")
    assert list(iter_documents(path, keys=("content",))) == [
        Document("content", "line one\nline two\n", path, 1)
    ]


def test_comma_separated_lists_and_globs_expand_in_order(tmp_path: Path, write_jsonl) -> None:
    for name in ("b", "a", "c"):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": name}])
    (tmp_path / "z.txt").write_text("z", encoding="utf-8")
    spec = f"{tmp_path}/z.txt,{tmp_path}/*.jsonl"
    assert [d.text for d in iter_documents(spec)] == ["z", "a", "b", "c"]
    assert [d.text for d in iter_documents([tmp_path / "c.jsonl", tmp_path / "a.jsonl"])] == [
        "c",
        "a",
    ]


def test_missing_inputs_and_unknown_suffixes_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.jsonl"):
        list(iter_documents(tmp_path / "nothing.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"no input file matches .*\*\.jsonl"):
        list(iter_documents(f"{tmp_path}/*.jsonl"))
    (tmp_path / "data.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\.csv: unsupported input file type"):
        list(iter_documents(tmp_path / "data.csv"))


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "mixed.jsonl").write_bytes(
        b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "lone \\ud800 surrogate"}\n'
    )
    stats = ReadStats()
    documents = list(iter_documents(f"{tmp_path}/latin1.txt,{tmp_path}/mixed.jsonl", stats=stats))
    assert [d.text for d in documents] == [
        "caf\ufffd",
        "fine",
        "caf\ufffd",
        "lone \ufffd surrogate",
    ]
    assert stats.invalid_utf8 == 3
    assert stats.bad_lines == 0


def test_bad_lines_are_counted_and_skipped_on_request(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = ['{"text": "a"}', "{broken", '{"body": "b"}', '{"text": 3}', "[1]", '{"text": "c"}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = ReadStats()
    documents = list(iter_documents(path, skip_bad_lines=True, stats=stats))
    assert [(d.text, d.line) for d in documents] == [("a", 1), ("c", 6)]
    assert stats.bad_lines == 4
    assert [example.split(": ")[0] for example in stats.bad_line_examples] == [
        f"{path}:{n}" for n in (2, 3, 4, 5)
    ]


def test_gzip_json_lines_are_read(tmp_path: Path) -> None:
    for name in ("a.json.gz", "b.jsonl.gz"):
        with gzip.open(tmp_path / name, "wb") as handle:
            handle.write(f'{{"text": "{name}"}}\n'.encode())
    assert [d.text for d in iter_documents(f"{tmp_path}/*.gz")] == ["a.json.gz", "b.jsonl.gz"]


def lm_dataformat_chunk(records: list[object]) -> bytes:
    """An lm_dataformat Archive chunk: zstd-compressed {"text", "meta"} lines."""
    zstandard = pytest.importorskip("zstandard")
    lines = "".join(json.dumps(record) + "\n" for record in records)
    return zstandard.ZstdCompressor().compress(lines.encode())


def test_lm_dataformat_archive_directory(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "data_1_time2_x.jsonl.zst").write_bytes(
        lm_dataformat_chunk([{"text": ["para one", "para two"], "meta": {"id": 1}}, "bare string"])
    )
    (archive / "data_0_time1_x.jsonl.zst").write_bytes(
        lm_dataformat_chunk([{"text": "first", "meta": {}}])
    )
    (archive / "current_chunk_incomplete").write_bytes(b"ignored: not a chunk")
    documents = list(iter_documents(archive))
    assert [d.text for d in documents] == ["first", "para one\n\npara two", "bare string"]
    assert documents[0].source.name == "data_0_time1_x.jsonl.zst"


def test_lm_dataformat_tar_of_chunks(tmp_path: Path) -> None:
    path = tmp_path / "pile.jsonl.zst.tar"
    with tarfile.open(path, "w") as archive:
        for name, records in (("00.jsonl.zst", [{"text": "x"}]), ("01.jsonl.zst", ["y", 5])):
            data = lm_dataformat_chunk(records)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    documents = iter_documents(path)
    assert [next(documents).text, next(documents).text] == ["x", "y"]
    with pytest.raises(ValueError, match=r"pile\.jsonl\.zst\.tar\[01\.jsonl\.zst\]:2: expected"):
        next(documents)


def test_zst_without_zstandard_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(MissingDependencyError, match=r"neox-data\[zstd\]"):
        list(iter_documents(path))


def test_zst_is_read_when_zstandard_is_installed(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "packed"}\n{"text": "two"}\n'))
    assert [d.text for d in iter_documents(path)] == ["packed", "two"]
