"""Tokenizers: the `Tokenizer` protocol, a Hugging Face ``tokenizers`` backend, BPE training."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
SUPPORTED_TOKENIZER_TYPES = ("HFTokenizer",)


@runtime_checkable
class Tokenizer(Protocol):
    """What neox needs from a tokenizer."""

    @property
    def eod_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class TokenizerSpec:
    """A picklable recipe for a tokenizer (GPT-NeoX's ``tokenizer_type`` + vocab/merge files).

    Worker processes receive this instead of a tokenizer and build their own with `build()`.
    """

    tokenizer_type: str
    vocab_file: str
    merge_file: str | None = None

    def build(self) -> Tokenizer:
        return build_tokenizer(self.tokenizer_type, self.vocab_file, self.merge_file)


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` tokenizer; end-of-document is ``<|endoftext|>``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {self.path}")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as err:  # the library raises plain Exception for bad JSON
            raise ValueError(f"{self.path}: not a valid tokenizer.json: {err}") from err
        eod = self._tokenizer.token_to_id(EOD_TOKEN)
        if eod is None:
            raise ValueError(f"{self.path}: the vocabulary has no {EOD_TOKEN} token")
        self._eod_id = eod

    @property
    def spec(self) -> TokenizerSpec:
        """The recipe that rebuilds this tokenizer in another process."""
        return TokenizerSpec("HFTokenizer", str(self.path))

    @property
    def eod_id(self) -> int:
        return self._eod_id

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens such as ``<|endoftext|>`` are kept in the text."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


def build_tokenizer(
    tokenizer_type: str, vocab_file: str | Path, merge_file: str | Path | None = None
) -> Tokenizer:
    """Build a tokenizer from GPT-NeoX's ``tokenizer_type`` / ``vocab_file`` / ``merge_file``."""
    match tokenizer_type:
        case "HFTokenizer":
            if merge_file is not None:
                logger.warning("HFTokenizer ignores merge_file %s", merge_file)
            return HFTokenizer(vocab_file)
        case _:
            supported = ", ".join(SUPPORTED_TOKENIZER_TYPES)
            raise ValueError(
                f"unsupported tokenizer type {tokenizer_type!r}; supported types: {supported}"
            )


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    output_path: str | Path,
    special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN),
) -> HFTokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` and write it to ``output_path`` (JSON).

    Special tokens take the first ids, so ``<|endoftext|>`` is id 0 with the default list.
    """
    if EOD_TOKEN not in special_tokens:
        raise ValueError(f"special_tokens must include {EOD_TOKEN}, got {list(special_tokens)}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    smallest = len(alphabet) + len(special_tokens)
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the byte alphabet and special tokens "
            f"already take {smallest} ids"
        )
    model = tokenizers.Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer=trainer)
    if model.get_vocab_size() < vocab_size:
        logger.warning(
            "corpus too small: the tokenizer has %d tokens, not the %d asked for",
            model.get_vocab_size(),
            vocab_size,
        )
    _save_atomically(model, Path(output_path))
    return HFTokenizer(output_path)


def _save_atomically(model: tokenizers.Tokenizer, path: Path) -> None:
    """Write ``model`` as JSON to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp_name)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
