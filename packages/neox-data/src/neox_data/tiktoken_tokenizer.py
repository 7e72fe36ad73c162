"""tiktoken BPE from a local ranks file, as GPT-NeoX's ``TiktokenTokenizer``; extra ``tiktoken``.

A ranks file (``*.tiktoken``) holds one token per line: its bytes in base64, a space, its rank
(= its id). GPT-NeoX passes an encoding *name* to ``tiktoken.get_encoding``, which downloads the
file; here ``vocab_file`` is the file itself, and its name picks the split pattern and special
tokens of OpenAI's encoding of that name (``cl100k_base.tiktoken`` -> cl100k_base). Any other
name gets GPT-2's pattern and ``<|endoftext|>`` as the id after the last rank.

Special tokens written in a document are encoded as special tokens (GPT-NeoX's batch path).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neox_data.dependency import import_optional
from neox_data.tokenizer import EOD_TOKEN, PAD_TOKEN, TokenizerSpec

logger = logging.getLogger(__name__)

RANKS_SUFFIX = ".tiktoken"

# OpenAI's split patterns (tiktoken_ext/openai_public.py). GPT-2's is written the fast way.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@dataclass(frozen=True)
class EncodingScheme:
    """How a ranks file is used: the split pattern and the special tokens' ids."""

    pattern: str
    special_tokens: Mapping[str, int] = field(default_factory=dict)  # empty: EOD after the ranks


KNOWN_ENCODINGS: Mapping[str, EncodingScheme] = {
    "gpt2": EncodingScheme(GPT2_PATTERN, {EOD_TOKEN: 50256}),
    "r50k_base": EncodingScheme(GPT2_PATTERN, {EOD_TOKEN: 50256}),
    "p50k_base": EncodingScheme(GPT2_PATTERN, {EOD_TOKEN: 50256}),
    "cl100k_base": EncodingScheme(
        CL100K_PATTERN,
        {
            EOD_TOKEN: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": EncodingScheme(O200K_PATTERN, {EOD_TOKEN: 199999, "<|endofprompt|>": 200018}),
}


def read_bpe_ranks(path: Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` ranks file; a bad line is reported with its number."""
    ranks: dict[bytes, int] = {}
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise ValueError(
                    f"{path}:{number}: not a tiktoken ranks line (expected 'BASE64 RANK'): "
                    f"{line[:60]!r}"
                ) from None
    if not ranks:
        raise ValueError(f"{path}: no tokens in the ranks file")
    return ranks


def write_bpe_ranks(ranks: Mapping[bytes, int], path: str | Path) -> Path:
    """Write ``ranks`` as a ``.tiktoken`` file, in rank order."""
    lines = [f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items()]
    path = Path(path)
    path.write_text("".join(sorted(lines, key=lambda line: int(line.split()[1]))), "ascii")
    return path


def gpt2_symbol_bytes() -> dict[str, int]:
    """GPT-2's ``vocab.json`` alphabet: the symbol standing for each byte, mapped to the byte.

    Printable Latin-1 bytes stand for themselves; the others, in byte order, for U+0100 onwards.
    """
    printable = [
        *range(0x21, 0x7E + 1),  # ! .. ~
        *range(0xA1, 0xAC + 1),  # ¡ .. ¬
        *range(0xAE, 0xFF + 1),  # ® .. ÿ
    ]
    others = [byte for byte in range(256) if byte not in printable]
    symbols = {chr(byte): byte for byte in printable}
    symbols.update({chr(256 + n): byte for n, byte in enumerate(others)})
    return symbols


def ranks_from_gpt2_vocab(
    vocab: Mapping[str, int], special_tokens: Sequence[str] = (EOD_TOKEN, PAD_TOKEN)
) -> dict[bytes, int]:
    """tiktoken ranks for a GPT-2 vocabulary: each token's bytes, ranked by its id.

    Equivalent to the merges when ids follow merge order, as in files BPE training writes.
    """
    to_byte = gpt2_symbol_bytes()
    ranks: dict[bytes, int] = {}
    for token, token_id in vocab.items():
        if token in special_tokens:
            continue
        try:
            ranks[bytes(to_byte[symbol] for symbol in token)] = token_id
        except KeyError as err:
            raise ValueError(f"token {token!r} is not written in GPT-2's byte alphabet") from err
    return ranks


def scheme_for(path: Path, ranks: Mapping[bytes, int]) -> EncodingScheme:
    """The known encoding named by the file, else GPT-2's pattern with EOD after the ranks."""
    name = path.name.removesuffix(RANKS_SUFFIX)
    if name in KNOWN_ENCODINGS:
        return KNOWN_ENCODINGS[name]
    logger.info("%s: not a known encoding name; using GPT-2's split pattern", path)
    return EncodingScheme(GPT2_PATTERN, {EOD_TOKEN: max(ranks.values()) + 1})


class TiktokenTokenizer:
    """A tiktoken encoding built from a local ranks file; needs ``neox-data[tiktoken]``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        tiktoken = import_optional("tiktoken", "tiktoken", "TiktokenTokenizer")
        if not self.path.is_file():
            hint = ""
            if str(path) in KNOWN_ENCODINGS:
                hint = f" (pass the path of a local {path}{RANKS_SUFFIX}; nothing is downloaded)"
            raise FileNotFoundError(f"tiktoken ranks file not found: {self.path}{hint}")
        ranks = read_bpe_ranks(self.path)
        scheme = scheme_for(self.path, ranks)
        clash = set(scheme.special_tokens.values()) & set(ranks.values())
        if clash:
            raise ValueError(f"{self.path}: special token ids {sorted(clash)} are also ranks")
        self._encoding: Any = tiktoken.Encoding(
            name=self.path.name,
            pat_str=scheme.pattern,
            mergeable_ranks=ranks,
            special_tokens=dict(scheme.special_tokens),
        )
        self._eod_id = int(scheme.special_tokens[EOD_TOKEN])

    @property
    def spec(self) -> TokenizerSpec:
        return TokenizerSpec("TiktokenTokenizer", str(self.path))

    @property
    def eod_id(self) -> int:
        return self._eod_id

    @property
    def vocab_size(self) -> int:
        return int(self._encoding.n_vocab)

    def encode(self, text: str) -> list[int]:
        return list(self._encoding.encode(text, allowed_special="all"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # One thread: preprocessing parallelises with worker processes, not tiktoken's pool.
        return [list(self._encoding.encode(text, allowed_special="all")) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._encoding.decode([int(i) for i in ids], errors="replace"))


class TiktokenEngine:
    """A byte-level BPE tokenizer whose encoding runs in tiktoken, with the same ids.

    Wraps an `HFTokenizer`, `GPT2BPETokenizer` or `HFGPT2Tokenizer` whose configuration
    `translate_byte_level_bpe` proves tiktoken can reproduce; decoding, ``eod_id`` and
    ``vocab_size`` stay with the wrapped tokenizer. `preprocess` also compares both encoders on
    the first documents of its input before trusting this one.
    """

    def __init__(self, reference: Any, encoding: Any, specials: frozenset[str]) -> None:
        self.reference = reference
        self._encoding = encoding
        self._specials = specials

    @classmethod
    def wrap(cls, reference: Any) -> TiktokenEngine:
        """The engine for ``reference``, or a ValueError saying why it cannot have one."""
        backend = getattr(reference, "backend", None)
        if backend is None:
            raise ValueError(
                f"{type(reference).__name__} is not a Hugging Face tokenizers-backed tokenizer; "
                "the tiktoken engine only translates byte-level BPE ones"
            )
        tiktoken = import_optional("tiktoken", "tiktoken", "the tiktoken engine")
        ranks, specials = translate_byte_level_bpe(backend)
        encoding = tiktoken.Encoding(
            name="neox-translated-bpe",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=specials,
        )
        return cls(reference, encoding, frozenset(specials))

    @property
    def spec(self) -> TokenizerSpec:
        spec: TokenizerSpec = self.reference.spec
        return dataclasses.replace(spec, engine="tiktoken")

    @property
    def eod_id(self) -> int:
        return int(self.reference.eod_id)

    @property
    def vocab_size(self) -> int:
        return int(self.reference.vocab_size)

    def encode(self, text: str) -> list[int]:
        return list(
            self._encoding.encode(text, allowed_special=self._specials, disallowed_special=())
        )

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.reference.decode(ids))


def translate_byte_level_bpe(backend: Any) -> tuple[dict[bytes, int], dict[str, int]]:
    """tiktoken ranks and special tokens that encode exactly as ``backend`` does.

    Proven from the configuration: no normalizer; GPT-2's byte-level pre-tokenizer without a
    prefix space; a plain BPE model (no dropout, unknown token, affixes or byte fallback); no
    post-processor adding tokens; added tokens matched as they are (no stripping or word
    boundaries, none inside another). Then merge ``i`` must produce the ``i``-th merged id in
    increasing order (so tiktoken's rank order is the merge order), and every merged token must
    encode to itself (tiktoken returns a whole pre-token that is in the vocabulary directly).
    Raises ValueError naming the first property that does not hold.
    """
    config = json.loads(backend.to_str())
    _require_translatable(config)
    model = config["model"]
    specials = {added["content"]: int(added["id"]) for added in config.get("added_tokens", [])}
    merged = _merged_tokens(model)
    to_byte = gpt2_symbol_bytes()
    ranks: dict[bytes, int] = {}
    for token, token_id in model["vocab"].items():
        if token in specials or (len(token) > 1 and token not in merged):
            continue  # unreachable by merges: tiktoken must not produce it either
        try:
            ranks[bytes(to_byte[symbol] for symbol in token)] = int(token_id)
        except KeyError:
            raise ValueError(f"token {token!r} is not in GPT-2's byte alphabet") from None
    if len([r for r in ranks if len(r) == 1]) != 256:
        raise ValueError("the vocabulary lacks some of the 256 single-byte tokens")
    if not model.get("ignore_merges"):
        _check_tokens_encode_to_themselves(backend, merged, model["vocab"])
    return ranks, specials


def _require_translatable(config: dict) -> None:
    pre = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    post = config.get("post_processor")
    problems = {
        "it has a normalizer": config.get("normalizer") is not None,
        "its pre-tokenizer is not GPT-2's ByteLevel without a prefix space": (
            pre.get("type") != "ByteLevel"
            or pre.get("add_prefix_space", True)
            or not pre.get("use_regex", True)
        ),
        "its model is not plain BPE": (
            model.get("type") != "BPE"
            or model.get("dropout") is not None
            or model.get("unk_token") is not None
            or bool(model.get("continuing_subword_prefix"))
            or bool(model.get("end_of_word_suffix"))
            or bool(model.get("byte_fallback"))
        ),
        "its post-processor adds tokens": post is not None and post.get("type") != "ByteLevel",
        "an added token strips spaces or matches whole words only": any(
            added.get("lstrip") or added.get("rstrip") or added.get("single_word")
            for added in config.get("added_tokens", [])
        ),
    }
    contents = [added["content"] for added in config.get("added_tokens", [])]
    problems["an added token contains another"] = any(
        a != b and a in b for a in contents for b in contents
    )
    for problem, present in problems.items():
        if present:
            raise ValueError(f"tiktoken cannot reproduce this tokenizer: {problem}")


def _merged_tokens(model: dict) -> set[str]:
    """The merge results; raises unless their ids increase in merge order."""
    vocab = model["vocab"]
    previous = -1
    merged: set[str] = set()
    for merge in model["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token_id = vocab.get(left + right)
        if token_id is None or token_id <= previous:
            raise ValueError(
                f"tiktoken cannot reproduce this tokenizer: merge {left!r} + {right!r} does "
                "not produce the next token id (tiktoken ranks merges by id)"
            )
        previous = token_id
        merged.add(left + right)
    return merged


def _check_tokens_encode_to_themselves(backend: Any, merged: set[str], vocab: dict) -> None:
    model = backend.model
    for token in merged:
        pieces = model.tokenize(token)
        if len(pieces) != 1 or pieces[0].id != vocab[token]:
            raise ValueError(
                f"tiktoken cannot reproduce this tokenizer: token {token!r} does not encode to "
                "itself (tiktoken would return it whole)"
            )
