"""The neox-data command, run in-process end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neox_data import HFTokenizer, TokenFile, TokenFileWriter
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
    assert not out.exists() or list(out.iterdir()) == []


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
    argv += ["--output-prefix", str(tmp_path / "c"), "--tokenizer-type", "BertTokenizer"]
    assert main(argv) == 2
    assert "supported types: HFTokenizer" in capsys.readouterr().err


def test_missing_input_is_a_user_error(tmp_path: Path, tokenizer_path: Path, capsys) -> None:
    argv = ["preprocess", "--input", str(tmp_path / "none.jsonl"), "--vocab-file"]
    assert main([*argv, str(tokenizer_path), "--output-prefix", str(tmp_path / "c")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_mask_before_token_writes_the_label_file(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    tokenizer = HFTokenizer(tokenizer_path)
    pattern = tokenizer.encode(" the")
    ids = ",".join(map(str, pattern))
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    prefix = tmp_path / "c"
    assert main([*argv, "--output-prefix", str(prefix), "--mask-before-token", ids]) == 0
    out = capsys.readouterr().out
    assert f"wrote {prefix}_label_document.bin" in out and "without the mask token(s)" in out
    tokens, labels = TokenFile(f"{prefix}_text_document"), TokenFile(f"{prefix}_label_document")
    assert (labels.sizes == tokens.sizes).all() and (labels.tokens < 0).any()
    argv = [*argv, "--output-prefix", str(tmp_path / "d"), "--mask-before-token", "1,x"]
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "comma-separated token ids" in capsys.readouterr().err


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


def test_skip_bad_lines_flag_reports_the_count(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys, caplog
) -> None:
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write("{broken\n")
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    argv += ["--output-prefix", str(tmp_path / "c"), "--skip-bad-lines"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "60 documents" in captured.out
    assert "1 bad lines skipped" in captured.out
    assert f"skipped bad line {corpus}:61: malformed JSON" in caplog.text


def test_an_unexpected_failure_exits_1_with_one_line(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys, monkeypatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("neox_data.cli.preprocess", broken)
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    assert main([*argv, "--output-prefix", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err == "neox-data: failed: RuntimeError: disk on fire (--debug shows where)\n"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main([*argv, "--output-prefix", str(tmp_path / "c"), "--debug"])


def test_char_level_needs_no_vocab_file(tmp_path: Path, corpus: Path) -> None:
    argv = ["preprocess", "--input", str(corpus), "--tokenizer-type", "CharLevelTokenizer"]
    assert main([*argv, "--output-prefix", str(tmp_path / "c"), "--append-eod"]) == 0
    tokens = TokenFile(tmp_path / "c_text_document")
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])["text"]
    assert tokens[0].tolist() == [*first.encode("utf-8"), 0]


def test_inspect_prints_counts_stats_and_decoded_documents(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    assert main([*argv, "--output-prefix", str(tmp_path / "c"), "--append-eod"]) == 0
    capsys.readouterr()
    prefix = str(tmp_path / "c_text_document")
    assert main(["inspect", prefix, "--vocab-file", str(tokenizer_path), "--documents", "2"]) == 0
    out = capsys.readouterr().out
    tokens = TokenFile(prefix)
    assert "dtype:       uint16" in out
    assert "documents:   60" in out
    assert f"tokens:      {tokens.num_tokens}" in out
    assert "end-of-document tokens: 60 (id 0)" in out
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])["text"]
    assert repr(first + "<|endoftext|>")[:40] in out
    assert "document 1:" in out and "document 2:" not in out
    assert main(["inspect", prefix]) == 0  # no tokenizer: token ids
    assert f"document 0:\n  {len(tokens[0])} tokens: {tokens[0][0]} " in capsys.readouterr().out


def test_merge_equals_preprocessing_the_joined_corpus(
    tmp_path: Path, tokenizer_path: Path, write_jsonl, make_texts, capsys
) -> None:
    texts = make_texts(30, seed=2)
    vocab = ["--vocab-file", str(tokenizer_path), "--append-eod"]
    for name, part in (("a", texts[:10]), ("b", texts[10:]), ("all", texts)):
        corpus = write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in part])
        out = tmp_path / ("parts" if name != "all" else "whole") / name
        assert (
            main(["preprocess", "--input", str(corpus), *vocab, "--output-prefix", str(out)]) == 0
        )
    merged = tmp_path / "merged"
    assert main(["merge", "--input", str(tmp_path / "parts"), "--output-prefix", str(merged)]) == 0
    assert "30 documents" in capsys.readouterr().out
    for suffix in (".bin", ".idx"):
        whole = (tmp_path / "whole" / f"all_text_document{suffix}").read_bytes()
        assert Path(f"{merged}{suffix}").read_bytes() == whole
    # Prefixes work too, and an existing output needs --overwrite.
    prefixes = [str(tmp_path / "parts" / f"{n}_text_document") for n in ("b", "a")]
    assert main(["merge", "--input", *prefixes, "--output-prefix", str(merged)]) == 2
    assert main(["merge", "--input", *prefixes, "--output-prefix", str(merged), "--overwrite"]) == 0
    assert TokenFile(merged)[0].tolist() == TokenFile(prefixes[0])[0].tolist()


def test_merge_refuses_mixed_dtypes(tmp_path: Path, capsys) -> None:
    for name, dtype in (("small", np.uint16), ("wide", np.int32)):
        with TokenFileWriter(tmp_path / name, dtype) as writer:
            writer.add_document([1, 2])
    argv = ["merge", "--input", str(tmp_path / "small"), str(tmp_path / "wide.idx")]
    assert main([*argv, "--output-prefix", str(tmp_path / "out")]) == 2
    assert "different dtypes" in capsys.readouterr().err
    assert not (tmp_path / "out.bin").exists()
