"""CharLevelTokenizer, SPMTokenizer, TiktokenTokenizer and the `build_tokenizer` factory."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from neox_data import (
    SUPPORTED_TOKENIZER_TYPES,
    CharLevelTokenizer,
    GPT2BPETokenizer,
    MissingDependencyError,
    SPMTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerSpec,
    build_tokenizer,
)
from neox_data.tiktoken_tokenizer import ranks_from_gpt2_vocab, write_bpe_ranks

# ---------------------------------------------------------------- character level


def test_char_level_ids_are_utf8_bytes_as_gpt_neox_writes_them(varied_texts) -> None:
    tokenizer = CharLevelTokenizer()
    assert (tokenizer.vocab_size, tokenizer.eod_id, tokenizer.pad_id) == (512, 0, 1)
    assert tokenizer.encode("hé\n") == [104, 0xC3, 0xA9, 10]
    for text in varied_texts:
        assert tokenizer.encode(text) == list(text.encode("utf-8"))
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode_batch(varied_texts) == [tokenizer.encode(t) for t in varied_texts]


def test_char_level_decodes_what_is_not_a_byte_as_replacement() -> None:
    tokenizer = CharLevelTokenizer()
    assert tokenizer.decode([104, 300, 105]) == "h\ufffdi"
    assert tokenizer.decode([0xC3]) == "\ufffd"  # half a character
    assert tokenizer.decode([104, tokenizer.eod_id]) == "h\x00"


# ---------------------------------------------------------------- SentencePiece


def train_spm(path: Path, texts: list[str], symbols: list[str]) -> Path:
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=300,
        hard_vocab_limit=False,
        user_defined_symbols=symbols,
        byte_fallback=True,  # every text round-trips, even unseen characters
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory, make_texts) -> Path:
    path = tmp_path_factory.mktemp("spm") / "tokenizer.model"
    return train_spm(path, make_texts(300), ["<|endoftext|>"])


def test_spm_round_trips_and_ends_documents_with_endoftext(spm_model: Path, varied_texts) -> None:
    tokenizer = SPMTokenizer(spm_model)
    assert 256 < tokenizer.vocab_size <= 300
    assert tokenizer.decode([tokenizer.eod_id]) == "<|endoftext|>"
    for text in varied_texts:
        ids = tokenizer.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids)
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch(varied_texts) == [tokenizer.encode(t) for t in varied_texts]
    assert tokenizer.eod_id in tokenizer.encode("a<|endoftext|>b")
    assert build_tokenizer("SPMTokenizer", spm_model).encode("fox") == tokenizer.encode("fox")


def test_spm_without_endoftext_ends_documents_with_eos(tmp_path: Path, make_texts) -> None:
    path = train_spm(tmp_path / "plain.model", make_texts(300), [])
    tokenizer = SPMTokenizer(path)
    assert tokenizer.decode([tokenizer.eod_id]) == "" and tokenizer.eod_id == 2  # </s>


def test_spm_reports_bad_files_and_the_missing_extra(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("sentencepiece")
    with pytest.raises(FileNotFoundError, match=r"none\.model"):
        SPMTokenizer(tmp_path / "none.model")
    (tmp_path / "junk.model").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"junk\.model: not a SentencePiece model"):
        SPMTokenizer(tmp_path / "junk.model")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(MissingDependencyError, match=r"neox-data\[spm\]"):
        SPMTokenizer(tmp_path / "junk.model")


# ---------------------------------------------------------------- tiktoken


def write_ranks(gpt2_files: tuple[Path, Path], path: Path) -> Path:
    """The GPT-2 vocabulary as tiktoken ranks: the token's bytes, its id as rank."""
    vocab = json.loads(gpt2_files[0].read_text(encoding="utf-8"))
    return write_bpe_ranks(ranks_from_gpt2_vocab(vocab), path)


def test_tiktoken_from_gpt2_ranks_gives_gpt2_ids(tmp_path: Path, gpt2_files, varied_texts) -> None:
    pytest.importorskip("tiktoken")
    ranks = write_ranks(gpt2_files, tmp_path / "mine.tiktoken")
    tokenizer = TiktokenTokenizer(ranks)
    gpt2 = GPT2BPETokenizer(*gpt2_files)
    last_rank = max(int(line.split()[1]) for line in ranks.read_text().splitlines())
    assert tokenizer.eod_id == last_rank + 1  # an unknown encoding name: EOD after the ranks
    assert tokenizer.vocab_size == last_rank + 2
    for text in varied_texts:
        ids = tokenizer.encode(text)
        if "<|" not in text:
            assert ids == gpt2.encode(text), text
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("<|endoftext|>") == [tokenizer.eod_id]
    assert tokenizer.encode_batch(varied_texts) == [tokenizer.encode(t) for t in varied_texts]


def test_tiktoken_file_named_after_an_openai_encoding_uses_its_scheme(
    tmp_path: Path, gpt2_files
) -> None:
    pytest.importorskip("tiktoken")
    tokenizer = TiktokenTokenizer(write_ranks(gpt2_files, tmp_path / "cl100k_base.tiktoken"))
    assert tokenizer.eod_id == 100257
    assert tokenizer.encode("<|fim_prefix|>") == [100258]
    # cl100k splits digits in groups of at most three, so no token spans "1234".
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode("1234567")]
    assert "".join(pieces) == "1234567"
    assert all(len(piece) <= 3 for piece in pieces)


def test_tiktoken_reports_bad_files_and_the_missing_extra(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot base64!! 1\n", encoding="ascii")
    with pytest.raises(ValueError, match=r"bad\.tiktoken:2: not a tiktoken ranks line"):
        TiktokenTokenizer(bad)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        TiktokenTokenizer("cl100k_base")
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(MissingDependencyError, match=r"neox-data\[tiktoken\]"):
        TiktokenTokenizer(bad)


# ---------------------------------------------------------------- the factory


@pytest.fixture
def spec_of(
    tmp_path: Path, tokenizer_path, gpt2_files, make_texts
) -> Callable[[str], TokenizerSpec]:
    def make(tokenizer_type: str) -> TokenizerSpec:
        vocab, merges = (str(p) for p in gpt2_files)
        match tokenizer_type:
            case "HFTokenizer":
                return TokenizerSpec(tokenizer_type, str(tokenizer_path))
            case "GPT2BPETokenizer" | "HFGPT2Tokenizer":
                return TokenizerSpec(tokenizer_type, vocab, merges)
            case "SPMTokenizer":
                model = train_spm(tmp_path / "t.model", make_texts(300), ["<|endoftext|>"])
                return TokenizerSpec(tokenizer_type, str(model))
            case "TiktokenTokenizer":
                pytest.importorskip("tiktoken")
                ranks = write_ranks(gpt2_files, tmp_path / "t.tiktoken")
                return TokenizerSpec(tokenizer_type, str(ranks))
            case _:
                return TokenizerSpec(tokenizer_type)

    return make


@pytest.mark.parametrize("tokenizer_type", SUPPORTED_TOKENIZER_TYPES)
def test_every_type_builds_round_trips_and_rebuilds_from_its_spec(
    spec_of, tokenizer_type: str, varied_texts
) -> None:
    spec = spec_of(tokenizer_type)
    tokenizer = spec.build()
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.spec == spec  # type: ignore[attr-defined]
    ids = tokenizer.encode_batch(varied_texts)
    assert ids == [tokenizer.encode(t) for t in varied_texts]
    assert [tokenizer.decode(i) for i in ids] == varied_texts
    assert 0 <= tokenizer.eod_id < tokenizer.vocab_size
    lower = build_tokenizer(tokenizer_type.lower(), spec.vocab_file, spec.merge_file)
    assert lower.encode("the fox") == tokenizer.encode("the fox")


def test_factory_errors_name_what_is_missing(gpt2_files) -> None:
    with pytest.raises(ValueError, match=r"'BertTokenizer'.*supported types: HFTokenizer, "):
        build_tokenizer("BertTokenizer", "x")
    with pytest.raises(ValueError, match="GPT2BPETokenizer needs a merge file: pass --merge-file"):
        build_tokenizer("GPT2BPETokenizer", gpt2_files[0])
    with pytest.raises(ValueError, match="HFTokenizer needs a vocab file: pass --vocab-file"):
        build_tokenizer("HFTokenizer")
