"""Tokenizers: BPE training, round trips, special tokens, the factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neox_data import HFTokenizer, Tokenizer, build_tokenizer, train_bpe_tokenizer

ROUND_TRIP_TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "naïve café déjà vu — Ångström straße",
    "東京のデータ 🚀 and words the tokenizer never saw: zyxwvq ŋ ẞ",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_inverts_encode(tokenizer: HFTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert ids
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_special_tokens_take_the_first_ids(tokenizer: HFTokenizer) -> None:
    assert tokenizer.eod_id == 0
    assert tokenizer.decode([tokenizer.eod_id]) == "<|endoftext|>"
    assert tokenizer.encode("<|padding|>") == [1]


def test_vocabulary_has_the_size_asked_for(tokenizer: HFTokenizer) -> None:
    assert tokenizer.vocab_size == 320


def test_training_merges_frequent_words(tokenizer: HFTokenizer) -> None:
    # "the" is frequent in the training text: it must not stay three single bytes.
    assert len(tokenizer.encode("the")) < 3


def test_encode_batch_matches_encode(tokenizer: HFTokenizer) -> None:
    assert tokenizer.encode_batch(ROUND_TRIP_TEXTS) == [
        tokenizer.encode(t) for t in ROUND_TRIP_TEXTS
    ]


def test_hf_tokenizer_satisfies_the_protocol(tokenizer: HFTokenizer) -> None:
    assert isinstance(tokenizer, Tokenizer)


def test_saved_file_is_a_byte_level_bpe_tokenizer_json(tokenizer_path: Path) -> None:
    config = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    assert config["model"]["type"] == "BPE"
    assert config["pre_tokenizer"]["type"] == "ByteLevel"
    assert config["pre_tokenizer"]["add_prefix_space"] is False
    assert config["decoder"]["type"] == "ByteLevel"


def test_training_writes_only_the_output_file_and_can_replace_it(tmp_path: Path) -> None:
    output = tmp_path / "tokenizer.json"
    output.write_text("old", encoding="utf-8")
    trained = train_bpe_tokenizer(["hello world"] * 5, vocab_size=260, output_path=output)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    assert trained.decode(trained.encode("hello there")) == "hello there"


def test_build_tokenizer_makes_an_hf_tokenizer(tokenizer_path: Path) -> None:
    built = build_tokenizer("HFTokenizer", str(tokenizer_path))
    assert isinstance(built, HFTokenizer)
    assert built.encode("the lazy dog") == HFTokenizer(tokenizer_path).encode("the lazy dog")


def test_build_tokenizer_lists_supported_types(tokenizer_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'GPT3Tokenizer'.*supported types: HFTokenizer"):
        build_tokenizer("GPT3Tokenizer", str(tokenizer_path))


def test_too_small_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size 100 is too small"):
        train_bpe_tokenizer(["text"], vocab_size=100, output_path=tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_missing_or_invalid_tokenizer_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        HFTokenizer(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        HFTokenizer(broken)


def test_tokenizer_without_eod_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no_eod.json"
    with pytest.raises(ValueError, match=r"must include <\|endoftext\|>"):
        train_bpe_tokenizer(["x"], 300, path, special_tokens=("<|padding|>",))
    assert not path.exists()


def test_tokenizer_json_without_eod_token_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models

    path = tmp_path / "plain.json"
    RawTokenizer(models.BPE()).save(str(path))
    with pytest.raises(ValueError, match=r"plain\.json: the vocabulary has no <\|endoftext\|>"):
        HFTokenizer(path)
