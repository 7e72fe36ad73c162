"""A compressed input cut short (an interrupted download or copy) stops `neox-data preprocess`
with one line naming the file, exit 2 and nothing written, with or without --skip-bad-lines."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from neox_data import DamagedInputError, iter_documents
from neox_data.cli import main


def _jsonl(make_texts) -> bytes:
    import json

    return "".join(json.dumps({"text": t}) + "\n" for t in make_texts(400, seed=3)).encode()


def _zst(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor().compress(data)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _last_byte_cut(data: bytes) -> bytes:
    return data[:-1]


# name -> (file name, builder from (jsonl bytes, cut) to file bytes, what the error names)
Build = Callable[[bytes, Callable[[bytes], bytes]], bytes]
CASES: dict[str, tuple[str, Build, str]] = {
    "zst": ("corpus.jsonl.zst", lambda data, cut: cut(_zst(data)), "corpus.jsonl.zst"),
    "gz": ("corpus.jsonl.gz", lambda data, cut: cut(gzip.compress(data)), "corpus.jsonl.gz"),
    "zst member of a tar": (
        "corpus.jsonl.zst.tar",
        lambda data, cut: _tar({"00.jsonl.zst": _zst(data), "01.jsonl.zst": cut(_zst(data))}),
        "corpus.jsonl.zst.tar[01.jsonl.zst]",
    ),
    "tar.gz": (
        "corpus.tar.gz",
        lambda data, cut: cut(gzip.compress(_tar({"a.txt": data, "b.txt": data}))),
        "corpus.tar.gz",
    ),
}


@pytest.mark.parametrize("cut", [_half, _last_byte_cut], ids=["half", "last byte"])
@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip-bad-lines"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_truncated_input_is_one_line_naming_it_and_nothing_is_written(
    tmp_path: Path, tokenizer_path: Path, make_texts, capsys, case: str, skip: bool, cut
) -> None:
    name, build, named = CASES[case]
    source = tmp_path / "in" / name
    source.parent.mkdir()
    source.write_bytes(build(_jsonl(make_texts), cut))
    out = tmp_path / "out"
    argv = ["preprocess", "--input", str(source), "--vocab-file", str(tokenizer_path)]
    argv += ["--output-prefix", str(out / "c")] + (["--skip-bad-lines"] if skip else [])

    assert main(argv) == 2

    err = capsys.readouterr().err  # the progress bar's lines, then the error
    [line] = [line for line in err.splitlines() if line.startswith("neox-data:")]
    head = f"neox-data: error: {source.parent / named}: "
    assert line.startswith(head), err
    assert "truncated" in line.removeprefix(head), err
    assert "malformed JSON" not in err and "Traceback" not in err, err
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("case", list(CASES))
def test_whole_compressed_inputs_are_read_to_the_end(tmp_path: Path, make_texts, case) -> None:
    name, build, _ = CASES[case]
    source = tmp_path / name
    source.write_bytes(build(_jsonl(make_texts), lambda data: data))
    expected = {"zst": 400, "gz": 400, "zst member of a tar": 800, "tar.gz": 2}[case]
    assert len(list(iter_documents(source))) == expected


def test_a_zst_file_of_several_frames_is_read_whole(tmp_path: Path) -> None:
    """`zstd` concatenates frames when files are appended (cat a.zst b.zst > c.zst)."""
    source = tmp_path / "joined.jsonl.zst"
    source.write_bytes(_zst(b'{"text": "one"}\n') + _zst(b'{"text": "two"}\n'))
    assert [d.text for d in iter_documents(source)] == ["one", "two"]


def test_a_tar_of_zst_members_cut_inside_a_member_names_the_tar(tmp_path: Path, make_texts) -> None:
    source = tmp_path / "corpus.jsonl.zst.tar"
    source.write_bytes(_half(_tar({"00.jsonl.zst": _zst(_jsonl(make_texts)) * 3})))
    with pytest.raises(DamagedInputError, match=rf"^{source}: truncated or damaged file"):
        list(iter_documents(source))
