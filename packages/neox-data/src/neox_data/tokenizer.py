"""The `Tokenizer` protocol and GPT-NeoX's ``tokenizer_type`` factory.

Each tokenizer type lives in its own module: `HFTokenizer`, `GPT2BPETokenizer` and
`HFGPT2Tokenizer` (Hugging Face ``tokenizers``) in ``hf_tokenizer``, `CharLevelTokenizer` in
``char_tokenizer``, `SPMTokenizer` (SentencePiece, extra ``spm``) in ``spm_tokenizer`` and
`TiktokenTokenizer` (extra ``tiktoken``) in ``tiktoken_tokenizer``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args, runtime_checkable

logger = logging.getLogger(__name__)

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"

ENGINES = ("hf", "tiktoken")  # how a byte-level BPE tokenizer encodes (build_tokenizer)
# GPT-NeoX's names (a run config's `tokenizer_type` is one of them); `build_tokenizer` also
# accepts them in any letter case, as GPT-NeoX does.
TokenizerType = Literal[
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "GPT2BPETokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
    "TiktokenTokenizer",
]
SUPPORTED_TOKENIZER_TYPES: tuple[TokenizerType, ...] = get_args(TokenizerType)


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
    vocab_file: str | None = None
    merge_file: str | None = None
    engine: str = "hf"  # "tiktoken": encode with tiktoken (see tiktoken_tokenizer.TiktokenEngine)

    def build(self) -> Tokenizer:
        return build_tokenizer(
            self.tokenizer_type, self.vocab_file, self.merge_file, engine=self.engine
        )


def canonical_tokenizer_type(tokenizer_type: str) -> str:
    """GPT-NeoX's spelling of ``tokenizer_type`` (matched ignoring case), or a ValueError."""
    for name in SUPPORTED_TOKENIZER_TYPES:
        if name.lower() == tokenizer_type.lower():
            return name
    supported = ", ".join(SUPPORTED_TOKENIZER_TYPES)
    raise ValueError(f"unsupported tokenizer type {tokenizer_type!r}; supported types: {supported}")


def build_tokenizer(
    tokenizer_type: str,
    vocab_file: str | Path | None = None,
    merge_file: str | Path | None = None,
    *,
    engine: str = "hf",
) -> Tokenizer:
    """Build a tokenizer from GPT-NeoX's ``tokenizer_type`` / ``vocab_file`` / ``merge_file``.

    Nothing is downloaded: every type but ``CharLevelTokenizer`` reads local files. With
    ``engine="tiktoken"`` a byte-level BPE tokenizer encodes with tiktoken instead (same ids;
    a ValueError says why when its configuration cannot be translated).
    """
    tokenizer = _build(tokenizer_type, vocab_file, merge_file)
    match engine:
        case "hf":
            return tokenizer
        case "tiktoken":
            from neox_data.tiktoken_tokenizer import TiktokenEngine

            return TiktokenEngine.wrap(tokenizer)
    raise ValueError(f"unknown tokenizer engine {engine!r}; use one of {', '.join(ENGINES)}")


def _build(
    tokenizer_type: str, vocab_file: str | Path | None, merge_file: str | Path | None
) -> Tokenizer:
    # The tokenizer modules import this one (for the protocol's constants and TokenizerSpec).
    from neox_data.char_tokenizer import CharLevelTokenizer
    from neox_data.hf_tokenizer import GPT2BPETokenizer, HFGPT2Tokenizer, HFTokenizer
    from neox_data.spm_tokenizer import SPMTokenizer
    from neox_data.tiktoken_tokenizer import TiktokenTokenizer

    name = canonical_tokenizer_type(tokenizer_type)
    if name not in ("GPT2BPETokenizer", "HFGPT2Tokenizer") and merge_file is not None:
        logger.warning("%s ignores merge_file %s", name, merge_file)
    match name:
        case "HFTokenizer":
            return HFTokenizer(_required(name, vocab_file))
        case "GPT2BPETokenizer":
            merges = _required(name, merge_file, "merge")
            return GPT2BPETokenizer(_required(name, vocab_file), merges)
        case "HFGPT2Tokenizer":
            return HFGPT2Tokenizer(_required(name, vocab_file), merge_file)
        case "SPMTokenizer":
            return SPMTokenizer(_required(name, vocab_file))
        case "TiktokenTokenizer":
            return TiktokenTokenizer(_required(name, vocab_file))
        case "CharLevelTokenizer":
            if vocab_file is not None:
                logger.warning("CharLevelTokenizer ignores vocab_file %s", vocab_file)
            return CharLevelTokenizer()
    raise AssertionError(f"unhandled tokenizer type {name}")


def _required(tokenizer_type: str, path: str | Path | None, kind: str = "vocab") -> str | Path:
    if path is None:
        raise ValueError(
            f"tokenizer type {tokenizer_type} needs a {kind} file: pass --{kind}-file "
            f"({kind}_file in the config)"
        )
    return path
