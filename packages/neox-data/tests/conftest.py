"""Shared fixtures: a small local corpus and a byte-level BPE tokenizer trained on it."""

from __future__ import annotations

import functools
import http.server
import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neox_data import HFTokenizer, train_bpe_tokenizer, write_gpt2_files

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


# Text that stresses tokenizers: unicode, whitespace runs, digits, contractions, special tokens.
VARIED_TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "trailing whitespace   \n\t  ",
    "naïve café déjà vu — Ångström straße",
    "東京のデータ 🚀 and words the tokenizer never saw: zyxwvq ŋ ẞ",
    "digits 0 12 345 6789 3.14159 1,000,000",
    "don't won't I'll we've they're she'd I'm it's DON'T",
    "crlf\r\nline\r\n",
    "a document<|endoftext|>another one",
    "",
]


@pytest.fixture(scope="session")
def varied_texts() -> list[str]:
    return list(VARIED_TEXTS)


@pytest.fixture(scope="session")
def gpt2_files(tokenizer_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """GPT-2 style vocab.json + merges.txt holding the session tokenizer's BPE model."""
    return write_gpt2_files(tokenizer_path, tmp_path_factory.mktemp("gpt2"))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server serving the files of a directory: (base URL, directory)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
