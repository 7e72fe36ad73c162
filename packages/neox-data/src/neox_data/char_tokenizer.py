"""GPT-NeoX's character-level tokenizer: one token per UTF-8 byte of the text.

GPT-NeoX encodes with ``np.fromstring(text, dtype=np.uint8)``, which reads a ``str`` as its
UTF-8 bytes, so a token is a byte value 0..255 in a vocabulary of 512; end-of-document is 0 and
padding 1 (the same ids as the NUL and SOH bytes). The ids written here are the same.

Decoding differs on purpose: GPT-NeoX maps each id to ``chr(min(max(id, 32), 512))``, which
turns newlines into spaces and multi-byte characters into Latin-1 mojibake. Here decoding is
the inverse of encoding: the bytes are read back as UTF-8 (U+FFFD for an id above 255 or an
incomplete character).
"""

from __future__ import annotations

from collections.abc import Sequence

from neox_data.tokenizer import TokenizerSpec

_BYTE_VALUES = 256


class CharLevelTokenizer:
    """UTF-8 bytes as token ids; vocabulary 512, ``eod_id`` 0, ``pad_id`` 1 (GPT-NeoX's values)."""

    VOCAB_SIZE = 512
    EOD_ID = 0
    PAD_ID = 1

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec("CharLevelTokenizer")

    @property
    def eod_id(self) -> int:
        return self.EOD_ID

    @property
    def pad_id(self) -> int:
        return self.PAD_ID

    @property
    def vocab_size(self) -> int:
        return self.VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(text.encode("utf-8")) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        pieces: list[str] = []
        run = bytearray()
        for token in ids:
            if 0 <= token < _BYTE_VALUES:
                run.append(token)
                continue
            pieces.append(run.decode("utf-8", errors="replace") + "\ufffd")
            run.clear()
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)
