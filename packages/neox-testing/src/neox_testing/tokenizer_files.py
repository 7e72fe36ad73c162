"""Hugging Face tokenizer files laid out as those of real model families (Llama 3, Qwen 2 / 2.5 /
3): a byte-level BPE of a few hundred tokens trained here on a local corpus, written as
``tokenizer.json`` + ``tokenizer_config.json``, so that transformers' ``AutoTokenizer`` and neox
read the same directory. No downloads; ``tokenizers`` is imported when a file is built."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The Split pre-tokenizers' regexes, as in the families' tokenizer.json files: Llama 3 groups
# digits by three (tiktoken's cl100k pattern), Qwen 2 splits every digit.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TokenizerFamily:
    """How a family's ``tokenizer.json`` differs from another's."""

    pattern: str  # the Split pre-tokenizer's regex (then ByteLevel without its own regex)
    specials: tuple[str, ...]  # special added tokens, ids after the trained vocabulary
    plain: tuple[str, ...] = ()  # added tokens matched in text but not special (Qwen 3's)
    bos: str | None = None  # prepended to every text by a TemplateProcessing post-processor
    nfc: bool = False  # an NFC normalizer
    ignore_merges: bool = False  # a pre-token in the vocabulary is one token (Llama 3)
    config: dict[str, Any] = field(default_factory=dict)  # tokenizer_config.json's values


TOKENIZER_FAMILIES: dict[str, TokenizerFamily] = {
    # Llama 3.1's first ten specials; the base model's eos_token is <|end_of_text|>
    "llama3": TokenizerFamily(
        pattern=LLAMA3_PATTERN,
        specials=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|reserved_special_token_2|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|eot_id|>",
        ),
        bos="<|begin_of_text|>",
        ignore_merges=True,
        config={
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|end_of_text|>",
            "clean_up_tokenization_spaces": True,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
        },
    ),
    # Qwen 2 / 2.5 / 3: no BOS; the base models' eos_token is <|endoftext|>
    "qwen2": TokenizerFamily(
        pattern=QWEN2_PATTERN,
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        plain=("<think>", "</think>"),
        nfc=True,
        config={
            "tokenizer_class": "Qwen2Tokenizer",
            "bos_token": None,
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "add_prefix_space": False,
            "errors": "replace",
            "split_special_tokens": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 131072,
        },
    ),
}

# What the tokenizers are trained on: every script, digit run, contraction and line ending
# the families' regexes treat differently.
TRAINING_TEXTS: tuple[str, ...] = tuple(
    f"{line} {n} {n * 7919}\n"
    for n in range(40)
    for line in (
        "The quick brown fox jumps over the lazy dog; it's what they'd done.",
        "naïve café déjà vu, Ångström straße: 東京のデータ 🚀",
        "def tokenize(text):\r\n    return text.split()  # 3.14159\n\n",
        "I'm sure we'll see you've said DON'T, and she's right.",
    )
)


def write_tokenizer_files(
    family: str,
    directory: str | Path,
    vocab_size: int = 384,
    texts: Sequence[str] = TRAINING_TEXTS,
) -> Path:
    """``directory`` holding ``tokenizer.json`` and ``tokenizer_config.json`` of a byte-level
    BPE laid out as ``family``'s (a key of `TOKENIZER_FAMILIES`): ``vocab_size`` trained tokens
    (the 256 bytes first), then the family's added tokens."""
    kind = TOKENIZER_FAMILIES[family]
    tokenizer = _trained_bpe(kind, vocab_size, texts)
    added = _add_tokens(tokenizer, kind)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {**kind.config, "added_tokens_decoder": added}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def _trained_bpe(kind: TokenizerFamily, vocab_size: int, texts: Sequence[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(ignore_merges=kind.ignore_merges))
    if kind.nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(kind.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _add_tokens(tokenizer: Any, kind: TokenizerFamily) -> dict[str, dict[str, Any]]:
    """The family's added tokens and post-processor on ``tokenizer``; the added tokens as
    ``tokenizer_config.json``'s ``added_tokens_decoder`` lists them."""
    from tokenizers import AddedToken, processors

    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in kind.specials])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in kind.plain])
    byte_level = processors.ByteLevel(trim_offsets=False)
    if kind.bos is None:
        tokenizer.post_processor = byte_level
    else:
        bos = (kind.bos, tokenizer.token_to_id(kind.bos))
        template = processors.TemplateProcessing(
            single=f"{kind.bos} $A", pair=f"{kind.bos} $A {kind.bos}:1 $B:1", special_tokens=[bos]
        )
        tokenizer.post_processor = processors.Sequence([byte_level, template])
    return {
        str(tokenizer.token_to_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token in kind.specials,
        }
        for token in (*kind.specials, *kind.plain)
    }
