"""The tiktoken engine: byte-level BPE encoded by tiktoken with identical ids, or not at all."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from neox_data import (
    CharLevelTokenizer,
    HFTokenizer,
    MissingDependencyError,
    TokenFile,
    TokenizerSpec,
    build_tokenizer,
    preprocess,
)
from neox_data.tiktoken_tokenizer import TiktokenEngine

pytest.importorskip("tiktoken")


@pytest.fixture
def corpus(tmp_path: Path, write_jsonl, make_texts, varied_texts) -> Path:
    texts = [*varied_texts, *make_texts(400, seed=11)]
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])


@pytest.mark.parametrize("tokenizer_type", ["HFTokenizer", "GPT2BPETokenizer", "HFGPT2Tokenizer"])
def test_engine_ids_equal_the_tokenizers_on_a_varied_corpus(
    tokenizer_type: str, tokenizer_path: Path, gpt2_files, varied_texts, make_texts
) -> None:
    files = (tokenizer_path, None) if tokenizer_type == "HFTokenizer" else gpt2_files
    reference = build_tokenizer(tokenizer_type, *files)
    engine = build_tokenizer(tokenizer_type, *files, engine="tiktoken")
    assert isinstance(engine, TiktokenEngine)
    texts = [*varied_texts, *make_texts(300, seed=12), "<|endoftext|><|padding|>x<|endof"]
    assert engine.encode_batch(texts) == reference.encode_batch(texts)
    assert (engine.eod_id, engine.vocab_size) == (reference.eod_id, reference.vocab_size)
    assert engine.spec == TokenizerSpec(tokenizer_type, *map(_str, files), engine="tiktoken")
    assert engine.spec.build().encode(texts[0]) == reference.encode(texts[0])


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@pytest.mark.parametrize("workers", [1, 2])
def test_preprocessing_with_either_engine_is_byte_identical(
    tmp_path: Path, corpus: Path, tokenizer: HFTokenizer, workers: int
) -> None:
    outputs = {}
    for engine in ("hf", "tiktoken"):
        result = preprocess(
            corpus,
            tmp_path / engine,
            tokenizer.spec,
            append_eod=True,
            workers=workers,
            tokenizer_engine=engine,
            progress=False,
        )
        assert result.engine == engine
        outputs[engine] = result.outputs["text"]
    for suffix in (".bin", ".idx"):
        assert (
            Path(f"{outputs['hf']}{suffix}").read_bytes()
            == Path(f"{outputs['tiktoken']}{suffix}").read_bytes()
        )


def test_auto_uses_tiktoken_when_it_can_and_the_tokenizer_otherwise(
    tmp_path: Path, corpus: Path, tokenizer: HFTokenizer
) -> None:
    auto = preprocess(corpus, tmp_path / "a", tokenizer, progress=False)
    assert auto.engine == "tiktoken"
    char = preprocess(corpus, tmp_path / "c", CharLevelTokenizer(), progress=False)
    assert char.engine == "hf"
    with pytest.raises(ValueError, match="not a Hugging Face tokenizers-backed tokenizer"):
        preprocess(corpus, tmp_path / "d", CharLevelTokenizer(), tokenizer_engine="tiktoken")


def edited(tokenizer_path: Path, tmp_path: Path, edit) -> Path:
    config = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    edit(config)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def swap_two_merged_ids(config: dict) -> None:
    vocab, merges = config["model"]["vocab"], config["model"]["merges"]
    first, second = ("".join(m.split(" ") if isinstance(m, str) else m) for m in merges[:2])
    vocab[first], vocab[second] = vocab[second], vocab[first]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: c.update(normalizer={"type": "NFKC"}), "it has a normalizer"),
        (lambda c: c["pre_tokenizer"].update(add_prefix_space=True), "without a prefix space"),
        (lambda c: c["model"].update(dropout=0.1), "not plain BPE"),
        (lambda c: c["added_tokens"][0].update(lstrip=True), "strips spaces"),
        (swap_two_merged_ids, "does not produce the next token id"),
    ],
)
def test_untranslatable_tokenizers_are_refused_with_the_reason(
    tmp_path: Path, tokenizer_path: Path, corpus: Path, edit, problem: str
) -> None:
    path = edited(tokenizer_path, tmp_path, edit)
    with pytest.raises(ValueError, match=problem):
        build_tokenizer("HFTokenizer", path, engine="tiktoken")
    spec = TokenizerSpec("HFTokenizer", str(path))
    result = preprocess(corpus, tmp_path / "auto", spec, progress=False)
    assert result.engine == "hf"
    with pytest.raises(ValueError, match=problem):
        preprocess(corpus, tmp_path / "forced", spec, tokenizer_engine="tiktoken", progress=False)


def test_a_document_encoded_differently_keeps_the_tokenizer(
    tmp_path: Path, corpus: Path, tokenizer: HFTokenizer, monkeypatch, caplog
) -> None:
    # Stand-in for a translation bug: the engine gets one early document wrong.
    original = TiktokenEngine.encode
    monkeypatch.setattr(
        TiktokenEngine,
        "encode",
        lambda self, text: original(self, text)[1:] if "\t" in text else original(self, text),
    )
    caplog.set_level("INFO")
    result = preprocess(corpus, tmp_path / "auto", tokenizer, progress=False)
    assert result.engine == "hf"
    assert f"encodes {corpus}:2 differently" in caplog.text
    with pytest.raises(ValueError, match=rf"encodes {corpus}:2 differently"):
        preprocess(corpus, tmp_path / "f", tokenizer, tokenizer_engine="tiktoken", progress=False)


def test_without_tiktoken_auto_keeps_the_tokenizer(
    tmp_path: Path, corpus: Path, tokenizer: HFTokenizer, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert preprocess(corpus, tmp_path / "a", tokenizer, progress=False).engine == "hf"
    with pytest.raises(MissingDependencyError, match=r"neox-data\[tiktoken\]"):
        preprocess(corpus, tmp_path / "b", tokenizer, tokenizer_engine="tiktoken", progress=False)


def test_cli_flag_picks_the_engine(
    tmp_path: Path, corpus: Path, tokenizer_path: Path, capsys
) -> None:
    from neox_data.cli import main

    argv = ["preprocess", "--input", str(corpus), "--vocab-file", str(tokenizer_path)]
    for engine in ("hf", "tiktoken"):
        out = ["--output-prefix", str(tmp_path / engine), "--tokenizer-engine", engine]
        assert main([*argv, *out]) == 0
        assert f"({engine} engine)" in capsys.readouterr().out
    assert (
        TokenFile(tmp_path / "hf_text_document").num_tokens
        == TokenFile(tmp_path / "tiktoken_text_document").num_tokens
    )


def test_engine_matches_on_random_strings_of_tricky_characters(tokenizer: HFTokenizer) -> None:
    rng = random.Random(0)
    pieces = [
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u00a0",
        "\u3000",
        "'s",
        "'ll",
        "'",
        "a",
        "Z",
        "é",
        "東京",
        "🚀",
        "1",
        "42",
        "3.5",
        "!",
        "?!",
        "--",
        "<|endoftext|>",
        "<|padding|>",
        "<|",
    ]
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 40))) for _ in range(500)]
    engine = TiktokenEngine.wrap(tokenizer)
    assert engine.encode_batch(texts) == tokenizer.encode_batch(texts)


def test_the_engine_is_checked_on_the_documents_within_the_sample_limit() -> None:
    """Both encoders run over the sample serially before the workers start, so it is bounded by
    characters as well as documents; the first document is always in it."""
    from neox_data.corpus import Document
    from neox_data.preprocess import engine_sample

    chunks = [
        [Document("text", "x" * size, Path("a.jsonl"), line) for line, size in enumerate(sizes)]
        for sizes in ([40, 30], [20, 10])
    ]
    assert [d.line for d in engine_sample(chunks, 100)] == [0, 1, 0, 1]
    assert [len(d.text) for d in engine_sample(chunks, 90)] == [40, 30, 20]
    assert [len(d.text) for d in engine_sample(chunks, 10)] == [40]
