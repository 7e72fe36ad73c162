"""Preprocessing: jsonl in, GPT-NeoX-named token files out; serial and worker processes agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neox_data import HFTokenizer, TokenFile, TokenizerSpec, preprocess


def test_writes_one_token_file_per_key_with_eod(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, make_texts
) -> None:
    texts = make_texts(20)
    records = [{"text": t, "title": t.upper()} for t in texts]
    records[5]["text"] = ""  # empty documents are counted and skipped
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    result = preprocess(
        corpus,
        tmp_path / "out" / "data",
        tokenizer,
        jsonl_keys=("text", "title"),
        append_eod=True,
        progress=False,
    )
    assert result.outputs == {
        "text": tmp_path / "out" / "data_text_document",
        "title": tmp_path / "out" / "data_title_document",
    }
    assert result.empty_documents == 1
    assert result.documents == 39
    assert result.text_bytes == sum(
        len(t.encode()) for t in texts + [t.upper() for t in texts]
    ) - len(texts[5].encode())
    for key, prefix in result.outputs.items():
        tokens = TokenFile(prefix)
        assert tokens.dtype == np.uint16
        expected = [r[key] for r in records if r[key]]
        assert len(tokens) == len(expected)
        for i, text in enumerate(expected):
            assert tokens[i].tolist() == [*tokenizer.encode(text), tokenizer.eod_id]
    assert result.tokens == sum(TokenFile(p).num_tokens for p in result.outputs.values())


def test_without_append_eod_documents_are_just_their_tokens(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "the lazy dog"}])
    result = preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    assert TokenFile(result.outputs["text"])[0].tolist() == tokenizer.encode("the lazy dog")


def test_worker_processes_give_byte_identical_output(
    tmp_path: Path, tokenizer_path: Path, write_jsonl, make_texts
) -> None:
    # Enough documents for several chunks in flight per worker.
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in make_texts(700, seed=3)])
    spec = TokenizerSpec("HFTokenizer", str(tokenizer_path))
    serial = preprocess(corpus, tmp_path / "serial", spec, append_eod=True, progress=False)
    parallel = preprocess(
        corpus, tmp_path / "parallel", spec, append_eod=True, workers=2, progress=False
    )
    assert (serial.documents, serial.tokens) == (parallel.documents, parallel.tokens)
    for suffix in (".bin", ".idx"):
        serial_bytes = Path(f"{serial.outputs['text']}{suffix}").read_bytes()
        assert serial_bytes == Path(f"{parallel.outputs['text']}{suffix}").read_bytes()


def test_workers_need_a_tokenizer_they_can_rebuild(tmp_path: Path, tokenizer, write_jsonl) -> None:
    class Opaque:
        eod_id = 0
        vocab_size = tokenizer.vocab_size
        encode = tokenizer.encode
        encode_batch = tokenizer.encode_batch
        decode = tokenizer.decode

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="TokenizerSpec"):
        preprocess(corpus, tmp_path / "d", Opaque(), workers=2, progress=False)


def test_existing_output_is_refused_before_reading(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "first"}])
    preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    write_jsonl(corpus, [{"text": "second"}])
    with pytest.raises(FileExistsError, match=r"d_text_document\.bin"):
        preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    result = preprocess(corpus, tmp_path / "d", tokenizer, overwrite=True, progress=False)
    assert TokenFile(result.outputs["text"])[0].tolist() == tokenizer.encode("second")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_line_leaves_no_output(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, make_texts, workers: int
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in make_texts(300)])
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write("{broken\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"c\.jsonl:301: malformed JSON"):
        preprocess(corpus, out / "d", tokenizer, workers=workers, progress=False)
    assert list(out.iterdir()) == []
