"""GPT-2 vocab.json + merges.txt: GPT2BPETokenizer and HFGPT2Tokenizer against a reference encoder.

The reference below is the GPT-2 algorithm written out plainly (byte-to-symbol table, GPT-2's
split pattern, lowest-rank merge first), as GPT-NeoX's ``gpt2_tokenization.py`` runs it.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from neox_data import (
    GPT2BPETokenizer,
    HFGPT2Tokenizer,
    HFTokenizer,
    build_tokenizer,
    train_bpe_tokenizer,
    write_gpt2_files,
)
from neox_data.tiktoken_tokenizer import gpt2_symbol_bytes

regex = pytest.importorskip("regex")

GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_symbols() -> dict[int, str]:
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the others for chr(256 + n)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + len(table) - len(printable))
    return table


def merge_once(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def reference_encode(text: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[int]:
    table = byte_symbols()
    rank = {pair: i for i, pair in enumerate(merges)}
    ids: list[int] = []
    for piece in regex.findall(GPT2_SPLIT, text):
        symbols = [table[byte] for byte in piece.encode("utf-8")]
        while len(symbols) > 1:
            pairs = list(itertools.pairwise(symbols))
            best = min(pairs, key=lambda pair: rank.get(pair, math.inf))
            if best not in rank:
                break
            symbols = merge_once(symbols, best)
        ids.extend(vocab[symbol] for symbol in symbols)
    return ids


def read_gpt2_files(vocab_file: Path, merge_file: Path) -> tuple[dict, list]:
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    lines = merge_file.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    return vocab, [tuple(line.split(" ")) for line in lines[1:] if line]


def test_library_byte_table_is_gpt2s() -> None:
    assert gpt2_symbol_bytes() == {symbol: byte for byte, symbol in byte_symbols().items()}


def test_written_files_have_gpt2_layout(gpt2_files: tuple[Path, Path], tokenizer) -> None:
    vocab, merges = read_gpt2_files(*gpt2_files)
    assert len(vocab) == tokenizer.vocab_size
    assert vocab["<|endoftext|>"] == 0
    assert set(byte_symbols().values()) <= set(vocab)
    assert all(len(pair) == 2 and "".join(pair) in vocab for pair in merges)


def test_gpt2_bpe_matches_the_reference_encoder(gpt2_files, varied_texts, make_texts) -> None:
    vocab, merges = read_gpt2_files(*gpt2_files)
    tokenizer = GPT2BPETokenizer(*gpt2_files)
    for text in [*varied_texts, *make_texts(50, seed=4)]:
        assert tokenizer.encode(text) == reference_encode(text, vocab, merges), text


def test_gpt2_bpe_round_trips_and_splits_special_tokens_as_text(gpt2_files, varied_texts) -> None:
    tokenizer = GPT2BPETokenizer(*gpt2_files)
    assert tokenizer.encode_batch(varied_texts) == [tokenizer.encode(t) for t in varied_texts]
    for text in varied_texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    # GPT-NeoX's GPT2BPETokenizer registers no special tokens: this is just punctuation and text.
    ids = tokenizer.encode("<|endoftext|>")
    assert len(ids) > 1
    assert tokenizer.eod_id not in ids
    assert tokenizer.eod_id == 0
    assert tokenizer.vocab_size == len(json.loads(gpt2_files[0].read_text(encoding="utf-8")))


def test_hf_gpt2_matches_special_tokens_and_agrees_elsewhere(gpt2_files, varied_texts) -> None:
    plain = GPT2BPETokenizer(*gpt2_files)
    fast = HFGPT2Tokenizer(*gpt2_files)
    for text in varied_texts:
        if "<|" not in text:
            assert fast.encode(text) == plain.encode(text)
        assert fast.decode(fast.encode(text)) == text
    assert fast.encode("a<|endoftext|>b") == [*plain.encode("a"), fast.eod_id, *plain.encode("b")]
    assert fast.encode("<|padding|>") == [1]  # already in this vocabulary: no new id
    assert fast.vocab_size == plain.vocab_size


def test_hf_gpt2_adds_a_padding_token_when_the_vocab_has_none(tmp_path: Path, make_texts) -> None:
    tokenizer_json = tmp_path / "tokenizer.json"
    train_bpe_tokenizer(make_texts(50), 300, tokenizer_json, special_tokens=("<|endoftext|>",))
    vocab_file, _ = write_gpt2_files(tokenizer_json, tmp_path / "gpt2")
    size = len(json.loads(vocab_file.read_text(encoding="utf-8")))
    # A directory, as GPT-NeoX passes vocab_file to from_pretrained; merges.txt found inside.
    fast = build_tokenizer("HFGPT2Tokenizer", tmp_path / "gpt2")
    assert fast.vocab_size == size + 1
    assert fast.encode("<|padding|>") == [size]
    assert GPT2BPETokenizer(vocab_file, tmp_path / "gpt2" / "merges.txt").vocab_size == size


def test_hf_tokenizer_json_and_its_gpt2_files_give_the_same_ids(
    gpt2_files, tokenizer: HFTokenizer, varied_texts
) -> None:
    fast = HFGPT2Tokenizer(gpt2_files[0])  # merges.txt beside vocab.json
    assert fast.encode_batch(varied_texts) == tokenizer.encode_batch(varied_texts)


def test_foreign_or_missing_files_are_reported(tmp_path: Path, gpt2_files) -> None:
    vocab_file, merge_file = gpt2_files
    with pytest.raises(FileNotFoundError, match=r"nothing\.txt"):
        GPT2BPETokenizer(vocab_file, tmp_path / "nothing.txt")
    broken = tmp_path / "vocab.json"
    broken.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json.*not a GPT-2 vocab\.json"):
        GPT2BPETokenizer(broken, merge_file)
    broken.write_text(json.dumps({"a": 0, "<|endoftext|>": 1}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a byte-level BPE vocabulary"):
        GPT2BPETokenizer(broken, tmp_path / "merges.txt")


def test_vocab_without_endoftext_is_refused(tmp_path: Path, gpt2_files) -> None:
    vocab = json.loads(gpt2_files[0].read_text(encoding="utf-8"))
    del vocab["<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    for kind in (GPT2BPETokenizer, HFGPT2Tokenizer):
        with pytest.raises(ValueError, match=r"vocab\.json: the vocabulary has no <\|endoftext"):
            kind(tmp_path / "vocab.json", gpt2_files[1])
