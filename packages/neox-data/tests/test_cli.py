"""The neox-data command, run in-process end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neox_data import HFTokenizer, TokenFile
from neox_data.cli import main


@pytest.fixture
def corpus(tmp_path: Path, write_jsonl, make_texts) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in make_texts(60, seed=9)])


def test_train_tokenizer_then_preprocess(tmp_path: Path, corpus: Path, capsys) -> None:
    tokenizer_json = tmp_path / "tok" / "tokenizer.json"
    argv = ["train-tokenizer", "--input", str(corpus), "--vocab-size", "300"]
    assert main([*argv, "--output", str(tokenizer_json)]) == 0
    tokenizer = HFTokenizer(tokenizer_json)
    assert tokenizer.vocab_size == 300

    prefix = tmp_path / "out" / "corpus"
    argv = ["preprocess", "--input", f"{tmp_path}/*.jsonl", "--vocab-file", str(tokenizer_json)]
    assert main([*argv, "--output-prefix", str(prefix), "--append-eod", "--workers", "1"]) == 0
    tokens = TokenFile(f"{prefix}_text_document")
    texts = corpus.read_text(encoding="utf-8").splitlines()
    assert len(tokens) == len(texts) == 60
    for i, line in enumerate(texts):
        expected = json.loads(line)["text"] + "<|endoftext|>"
        assert tokenizer.decode(tokens[i].tolist()) == expected
    out = capsys.readouterr().out
    assert f"wrote {prefix}_text_document.bin" in out
    assert "60 documents" in out


def test_bad_jsonl_line_is_one_error_line_and_no_output(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write('{"txt": "wrong key"}\n')
    out = tmp_path / "out"
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    assert main([*argv, "--output-prefix", str(out / "c")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"neox-data: error: {corpus}:61: missing key 'text'")
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_debug_shows_the_exception(tmp_path: Path, corpus: Path, tokenizer_path: Path) -> None:
    corpus.write_text("not json\n", encoding="utf-8")
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    with pytest.raises(ValueError, match=r"corpus\.jsonl:1: malformed JSON"):
        main([*argv, "--output-prefix", str(tmp_path / "c"), "--debug"])


def test_existing_output_needs_overwrite(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    argv += ["--output-prefix", str(tmp_path / "c")]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_unknown_tokenizer_type_lists_the_supported_ones(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    argv += ["--output-prefix", str(tmp_path / "c"), "--tokenizer-type", "SPMTokenizer"]
    assert main(argv) == 2
    assert "supported types: HFTokenizer" in capsys.readouterr().err


def test_missing_input_is_a_user_error(tmp_path: Path, tokenizer_path: Path, capsys) -> None:
    argv = ["preprocess", "--input", str(tmp_path / "none.jsonl"), "--vocab-file"]
    assert main([*argv, str(tokenizer_path), "--output-prefix", str(tmp_path / "c")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_only_the_mmap_dataset_impl_is_accepted(tmp_path: Path, tokenizer_path: Path) -> None:
    argv = ["preprocess", "--input", "x.jsonl", "--vocab-file", str(tokenizer_path)]
    with pytest.raises(SystemExit) as excinfo:
        main([*argv, "--output-prefix", str(tmp_path / "c"), "--dataset-impl", "lazy"])
    assert excinfo.value.code == 2


def test_python_dash_m_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "neox_data", "preprocess", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--jsonl-keys" in completed.stdout
    assert "--append-eod" in completed.stdout
