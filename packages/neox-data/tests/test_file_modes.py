"""Files written under a temporary name and renamed into place get the permissions the umask
asks for (0o666 & ~umask), as files written in place do: colleagues on a shared cluster can read
token files, tokenizers, index caches and downloads."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from neox_data import GPTDataset, TokenFile, TokenFileWriter
from neox_data.cli import main


@pytest.fixture(params=[0o022, 0o027], ids=["umask 022", "umask 027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_preprocess_merge_and_train_tokenizer_outputs_follow_the_umask(
    tmp_path: Path, umask: int, write_jsonl, make_texts
) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in make_texts(40)])
    tokenizer = tmp_path / "tok" / "tokenizer.json"
    argv = ["train-tokenizer", "--input", str(corpus), "--vocab-size", "300"]
    assert main([*argv, "--output", str(tokenizer)]) == 0
    prefix = tmp_path / "out" / "c"
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer)]
    assert main([*argv, "--output-prefix", str(prefix)]) == 0
    merged = tmp_path / "merged"
    assert (
        main(["merge", "--input", f"{prefix}_text_document", "--output-prefix", str(merged)]) == 0
    )

    written = [tokenizer, *(Path(f"{prefix}_text_document{s}") for s in (".bin", ".idx"))]
    written += [Path(f"{merged}{s}") for s in (".bin", ".idx")]
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(0o666 & ~umask) for p in written}


def test_index_cache_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    with TokenFileWriter(tmp_path / "corpus", np.uint16) as writer:
        for length in range(1, 30):
            writer.add_document(np.arange(length))
    tokens = TokenFile(tmp_path / "corpus")
    GPTDataset(tokens, np.arange(len(tokens)), num_samples=20, seq_length=8, seed=1)
    cached = sorted(tmp_path.glob("*.npy"))
    assert len(cached) == 3  # doc_idx, sample_idx, shuffle_idx
    assert {p.name: oct(mode(p)) for p in cached} == {p.name: oct(0o666 & ~umask) for p in cached}
    tokens.max_id()
    [id_range] = set(tmp_path.glob("*.npy")) - set(cached)
    assert oct(mode(id_range)) == oct(0o666 & ~umask)


def test_downloads_follow_the_umask(tmp_path: Path, umask: int, mirror) -> None:
    base_url, served = mirror
    (served / "enron_emails.jsonl.zst").write_bytes(b"")
    data = tmp_path / "data"
    assert main(["download", "enron", "--data-dir", str(data), "--mirror", base_url]) == 0
    assert oct(mode(data / "enron" / "enron_emails.jsonl.zst")) == oct(0o666 & ~umask)
