"""Shared fixtures: a small local corpus and a byte-level BPE tokenizer trained on it."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from neox_data import HFTokenizer, train_bpe_tokenizer

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "tokens",
    "stream",
    "into",
    "memory",
    "mapped",
    "files",
    "naïve",
    "café",
    "déjà",
    "vu",
    "Ångström",
    "straße",
    "東京",
    "データ",
    "🚀",
    "résumé",
]


def _make_texts(count: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 3 to 30 words, some spanning lines."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(3, 30))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), "\n")
        texts.append(" ".join(words))
    return texts


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_texts() -> Callable[..., list[str]]:
    return _make_texts


@pytest.fixture(scope="session")
def write_jsonl() -> Callable[[Path, list[dict]], Path]:
    return _write_jsonl


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_bpe_tokenizer(_make_texts(400), vocab_size=320, output_path=path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> HFTokenizer:
    return HFTokenizer(tokenizer_path)
