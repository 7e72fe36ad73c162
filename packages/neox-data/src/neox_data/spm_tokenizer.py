"""SentencePiece models (``tokenizer.model``), as GPT-NeoX's ``SPMTokenizer``; extra ``spm``.

Texts are encoded with the model's own settings and no BOS/EOS added, as GPT-NeoX does.
End-of-document is the piece ``<|endoftext|>``. GPT-NeoX silently takes the unknown-token id
when the model has no such piece; here the model's EOS piece (``</s>``) is used instead, with a
log message, and a model with neither is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neox_data.dependency import import_optional
from neox_data.tokenizer import EOD_TOKEN, TokenizerSpec

logger = logging.getLogger(__name__)


class SPMTokenizer:
    """A SentencePiece model file; needs ``pip install 'neox-data[spm]'``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        sentencepiece = import_optional("sentencepiece", "spm", "SPMTokenizer")
        if not self.path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {self.path}")
        try:
            self._model: Any = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{self.path}: not a SentencePiece model: {err}") from err
        self._eod_id = self._find_eod()

    def _find_eod(self) -> int:
        eod = self._model.piece_to_id(EOD_TOKEN)
        if self._model.id_to_piece(eod) == EOD_TOKEN:
            return int(eod)
        eos = self._model.eos_id()
        if eos < 0:
            raise ValueError(
                f"{self.path}: the model has neither a {EOD_TOKEN} piece nor an EOS piece to end "
                f"documents with; train it with user_defined_symbols={EOD_TOKEN}"
            )
        logger.info("%s has no %s piece; documents end with its EOS piece", self.path, EOD_TOKEN)
        return int(eos)

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec("SPMTokenizer", str(self.path))

    @property
    def eod_id(self) -> int:
        return self._eod_id

    @property
    def vocab_size(self) -> int:
        return int(self._model.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self._model.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._model.encode(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._model.decode([int(i) for i in ids]))
