"""Tokenizers on Hugging Face ``tokenizers``: ``tokenizer.json``, GPT-2 vocab/merges, training.

GPT-2's files are ``vocab.json`` (token -> id, tokens written in GPT-2's byte-to-unicode alphabet)
and ``merges.txt`` (a ``#version`` line, then one merge ``left right`` per line, best first).
GPT-NeoX reads them two ways, both kept here with the same ids:

- ``GPT2BPETokenizer``: GPT-NeoX's own port of OpenAI's encoder. It knows no special tokens, so
  an ``<|endoftext|>`` inside a document is split like any other text; the vocabulary is
  exactly ``vocab.json``.
- ``HFGPT2Tokenizer``: transformers' ``GPT2TokenizerFast``, which matches ``<|endoftext|>`` in
  text as one token and adds a ``<|padding|>`` token after the vocabulary when it has none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

from neox_data.atomic_file import replacing
from neox_data.tokenizer import EOD_TOKEN, PAD_TOKEN, TokenizerSpec

logger = logging.getLogger(__name__)

GPT2_VOCAB_NAME = "vocab.json"
GPT2_MERGES_NAME = "merges.txt"


# The end-of-document tokens of tokenizer.json files, the first one in the vocabulary wins:
# GPT-NeoX's (and Qwen's), Llama 3's, then SentencePiece-derived files' (Llama 2, Mistral).
HF_EOD_TOKENS = (EOD_TOKEN, "<|end_of_text|>", "</s>")


class _Backed:
    """The `Tokenizer` protocol over a ``tokenizers.Tokenizer`` whose vocabulary has EOD: the
    first of ``eod_tokens`` it holds."""

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        source: Path,
        eod_tokens: Sequence[str] = (EOD_TOKEN,),
    ) -> None:
        ids = (tokenizer.token_to_id(token) for token in eod_tokens)
        eod = next((i for i in ids if i is not None), None)
        if eod is None:
            raise ValueError(f"{source}: the vocabulary has no {' or '.join(eod_tokens)} token")
        self._tokenizer = tokenizer
        self._eod_id: int = eod

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work (read-only use, please)."""
        return self._tokenizer

    @property
    def eod_id(self) -> int:
        return self._eod_id

    @property
    def bos_id(self) -> int | None:
        """The id ``encode`` puts before every text (the file's post-processor's BOS: Llama 3's
        ``<|begin_of_text|>``), None where it adds none (GPT-NeoX's, Qwen's, GPT-2's files)."""
        added = self._tokenizer.encode("")  # the post-processor's tokens alone, marked special
        return added.ids[0] if added.special_tokens_mask[:1] == [1] else None

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text; `encode_batch_fast` (tokenizers >= 0.20) computes the same ids
        without the character offsets, about a quarter faster per core."""
        fast = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [encoding.ids for encoding in fast(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens such as ``<|endoftext|>`` are kept in the text.

        Ids that end inside a multi-byte character decode to U+FFFD.
        """
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


class HFTokenizer(_Backed):
    """A Hugging Face ``tokenizer.json`` tokenizer (GPT-NeoX's, Llama 3's, Qwen 2 / 2.5 / 3's...).

    End-of-document is the first of `HF_EOD_TOKENS` in the vocabulary: ``<|endoftext|>`` (GPT-NeoX
    and Qwen, as GPT-NeoX's HFTokenizer), else ``<|end_of_text|>`` (Llama 3), else ``</s>``. The
    file is all that is read: a ``tokenizer_config.json``'s ``eos_token`` names the end of a chat
    turn in instruct models (``<|eot_id|>``, ``<|im_end|>``), not of a pre-training document.

    ``encode`` runs the file's whole pipeline, post-processor included, as GPT-NeoX's
    HFTokenizer and transformers' ``encode(text)`` (``add_special_tokens=True``) do: the ids of
    a Llama 3 document start with ``<|begin_of_text|>`` (`bos_id`; then EOD is appended after
    the text with ``append_eod``); GPT-NeoX's and Qwen's files add no BOS (`bos_id` is None).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {self.path}")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as err:  # the library raises plain Exception for bad JSON
            raise ValueError(f"{self.path}: not a valid tokenizer.json: {err}") from err
        super().__init__(tokenizer, self.path, HF_EOD_TOKENS)

    @property
    def spec(self) -> TokenizerSpec:
        """The recipe that rebuilds this tokenizer in another process."""
        return TokenizerSpec("HFTokenizer", str(self.path))


class GPT2BPETokenizer(_Backed):
    """GPT-2 byte-level BPE from ``vocab.json`` + ``merges.txt``, as GPT-NeoX's GPT2BPETokenizer.

    No special tokens are matched in text; ``eod_id`` is ``vocab.json``'s ``<|endoftext|>``.
    """

    tokenizer_type = "GPT2BPETokenizer"

    def __init__(self, vocab_file: str | Path, merge_file: str | Path) -> None:
        self.vocab_file = Path(vocab_file)
        self.merge_file = Path(merge_file)
        super().__init__(self._build(), self.vocab_file)

    def _build(self) -> tokenizers.Tokenizer:
        return byte_level_bpe(self.vocab_file, self.merge_file)

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec(self.tokenizer_type, str(self.vocab_file), str(self.merge_file))


class HFGPT2Tokenizer(GPT2BPETokenizer):
    """GPT-2 files read as transformers' ``GPT2TokenizerFast`` reads them, as GPT-NeoX's type.

    ``vocab_file`` is a directory holding ``vocab.json`` and ``merges.txt`` (what GPT-NeoX hands
    to ``from_pretrained``) or the ``vocab.json`` itself, with ``merge_file`` defaulting to the
    ``merges.txt`` beside it. ``<|endoftext|>`` and ``<|padding|>`` are special tokens: matched
    in text, and ``<|padding|>`` gets the next free id when ``vocab.json`` lacks it.
    """

    tokenizer_type = "HFGPT2Tokenizer"

    def __init__(self, vocab_file: str | Path, merge_file: str | Path | None = None) -> None:
        vocab = Path(vocab_file)
        if vocab.is_dir():
            vocab, merge_file = vocab / GPT2_VOCAB_NAME, merge_file or vocab / GPT2_MERGES_NAME
        super().__init__(vocab, merge_file or vocab.parent / GPT2_MERGES_NAME)

    def _build(self) -> tokenizers.Tokenizer:
        tokenizer = byte_level_bpe(self.vocab_file, self.merge_file)
        if EOD_TOKEN not in tokenizer.get_vocab():
            raise ValueError(f"{self.vocab_file}: the vocabulary has no {EOD_TOKEN} token")
        tokenizer.add_special_tokens(
            [AddedToken(token, special=True, normalized=False) for token in (EOD_TOKEN, PAD_TOKEN)]
        )
        return tokenizer


def byte_level_bpe(vocab_file: Path, merge_file: Path) -> tokenizers.Tokenizer:
    """A ``tokenizers.Tokenizer`` doing GPT-2's byte-level BPE with these files; no specials."""
    for path in (vocab_file, merge_file):
        if not path.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file not found: {path}")
    try:
        model = models.BPE.from_file(str(vocab_file), str(merge_file))
    except Exception as err:  # the library raises plain Exception for unreadable files
        raise ValueError(
            f"{vocab_file} / {merge_file}: not a GPT-2 vocab.json and merges.txt: {err}"
        ) from err
    tokenizer = tokenizers.Tokenizer(model)
    _check_byte_alphabet(tokenizer, vocab_file)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _check_byte_alphabet(tokenizer: tokenizers.Tokenizer, vocab_file: Path) -> None:
    """Every one of the 256 byte symbols must be a token, or some text would have no ids."""
    vocab = tokenizer.get_vocab()
    missing = [symbol for symbol in pre_tokenizers.ByteLevel.alphabet() if symbol not in vocab]
    if missing:
        raise ValueError(
            f"{vocab_file}: not a byte-level BPE vocabulary: {len(missing)} of the 256 byte "
            f"symbols have no token (e.g. {missing[0]!r})"
        )


def write_gpt2_files(tokenizer_json: str | Path, directory: str | Path) -> tuple[Path, Path]:
    """Write a byte-level BPE ``tokenizer.json``'s model as GPT-2 ``vocab.json`` + ``merges.txt``.

    Added tokens that are not in the model's vocabulary are appended after it, as OpenAI's
    ``encoder.json`` holds ``<|endoftext|>``.
    """
    config = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model = config.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_json}: not a BPE tokenizer (model type {model.get('type')})")
    vocab: dict[str, int] = dict(model["vocab"])
    for added in config.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out / GPT2_VOCAB_NAME, out / GPT2_MERGES_NAME
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in merges), encoding="utf-8")
    return vocab_path, merges_path


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
    with replacing(path) as temp:
        model.save(str(temp))
