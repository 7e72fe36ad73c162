"""`neox-data download` against a local HTTP server (nothing leaves this machine)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from neox_data import TokenFile, iter_documents
from neox_data.cli import main
from neox_data.public_corpora import PUBLIC_CORPORA, source_url

ENWIK8_SAMPLE = "<mediawiki>\n  <page><title>Ångström</title><text>naïve 🚀</text></page>\n"


def test_enwik8_downloads_then_preprocesses(tmp_path: Path, mirror, capsys) -> None:
    base_url, served = mirror
    with zipfile.ZipFile(served / "enwik8.zip", "w") as archive:
        archive.writestr("enwik8", ENWIK8_SAMPLE)
    data = tmp_path / "data"
    assert main(["download", "enwik8", "--data-dir", str(data), "--mirror", base_url]) == 0
    assert "downloaded 1 file(s)" in capsys.readouterr().out
    assert (data / "enwik8" / "enwik8.zip").read_bytes() == (served / "enwik8.zip").read_bytes()
    assert [p.name for p in (data / "enwik8").iterdir()] == ["enwik8.zip"]
    (served / "enwik8.zip").unlink()  # a second run keeps the file it has
    assert main(["download", "enwik8", "--data-dir", str(data), "--mirror", base_url]) == 0

    argv = ["preprocess", "--input", str(data / "enwik8"), "--tokenizer-type", "CharLevelTokenizer"]
    assert main([*argv, "--output-prefix", str(data / "enwik8" / "enwik8")]) == 0
    tokens = TokenFile(data / "enwik8" / "enwik8_text_document")
    assert bytes(tokens[0].tolist()).decode("utf-8") == ENWIK8_SAMPLE


def test_a_missing_file_fails_with_exit_1_and_leaves_nothing(tmp_path: Path, mirror, capsys):
    base_url, _ = mirror
    data = tmp_path / "data"
    assert main(["download", "enron", "--data-dir", str(data), "--mirror", base_url]) == 1
    err = capsys.readouterr().err
    assert "cannot download" in err and "enron_emails.jsonl.zst" in err and "404" in err
    assert list((data / "enron").iterdir()) == []


def test_unknown_names_are_usage_errors_and_list_shows_the_real_urls(capsys) -> None:
    assert main(["download", "wikipedia-2099"]) == 2
    assert "known: arxiv, books1" in capsys.readouterr().err
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "https://data.deepai.org/enwik8.zip" in listing
    assert "pile               https://the-eye.eu/public/AI/pile/train/00.jsonl.zst (+29 more)" in (
        listing
    )
    assert PUBLIC_CORPORA["openwebtext2"].num_docs == 17103000


def test_a_mirror_keeps_the_file_name() -> None:
    url = "https://the-eye.eu/public/AI/pile/train/07.jsonl.zst"
    assert source_url(url, None) == url
    assert source_url(url, "http://cache.local/pile/") == "http://cache.local/pile/07.jsonl.zst"


def test_zip_and_tar_gz_members_are_documents(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("dir/", "")
        archive.writestr("dir/one.txt", "first")
        archive.writestr("two.txt", b"caf\xe9")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("three.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"third"))
    documents = list(iter_documents([tmp_path / "a.zip", tmp_path / "b.tar.gz"]))
    assert [(d.text, d.member) for d in documents] == [
        ("first", "dir/one.txt"),
        ("caf\ufffd", "two.txt"),
        ("third", "three.txt"),
    ]
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.zip: truncated or damaged file"):
        list(iter_documents(tmp_path / "bad.zip"))
