"""The tokenizer files a converted checkpoint carries, and what neox-train reads from them.

neox-train names its tokenizer with `tokenizer_type` (neox-data's GPT-NeoX names), `vocab_file`
and, for GPT-2 BPE, `merge_file`; it pads the vocabulary it counts in them. Conversions copy the
files into the step directory under their own names (the manifest names the vocabulary file)
and count the tokens the way neox-data does where the format allows it without other libraries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_convert.errors import ConversionError


@dataclass(frozen=True)
class TokenizerFiles:
    kind: str | None = None  # neox-data's tokenizer_type; None: no tokenizer
    vocab: Path | None = None  # the file `vocab_file` names
    merges: Path | None = None  # GPT-2 BPE merges
    extra: tuple[Path, ...] = ()  # copied along (tokenizer_config.json, special_tokens_map.json)

    @property
    def files(self) -> list[Path]:
        """Every file to copy, the vocabulary file first."""
        return [p for p in (self.vocab, self.merges, *self.extra) if p is not None]

    def run_keys(self, step_dir: Path) -> dict[str, Any]:
        """The run config's tokenizer keys once the files are copied into `step_dir`."""
        if self.kind is None or self.vocab is None:
            return {}
        keys: dict[str, Any] = {
            "tokenizer_type": self.kind,
            "vocab_file": str(step_dir / self.vocab.name),
        }
        if self.merges is not None:
            keys["merge_file"] = str(step_dir / self.merges.name)
        return keys

    def vocab_size(self) -> int | None:
        """Tokens neox-data will count, or None where that needs another library (SentencePiece,
        tiktoken) or the file is absent."""
        if self.vocab is None or not self.vocab.is_file():
            return None
        if self.kind == "HFTokenizer":
            return _tokenizer_json_size(self.vocab)
        if self.kind == "GPT2BPETokenizer":
            return len(_json(self.vocab))
        return None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{path} is not a readable tokenizer file: {err}") from err


def _tokenizer_json_size(path: Path) -> int:
    """Tokens of a tokenizer.json, added tokens included (as neox-data counts them)."""
    from tokenizers import Tokenizer

    try:
        return int(Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True))
    except Exception as err:  # tokenizers raises its own exception types
        raise ConversionError(f"{path} is not a readable tokenizer.json: {err}") from err
