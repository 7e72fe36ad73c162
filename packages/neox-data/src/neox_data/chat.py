"""Conversations into token and label files through the tokenizer's own chat template.

GPT-NeoX's ``preprocess_data_with_chat_template.py``, its flags and file names: each JSON key
(``--jsonl-keys``, default ``messages``; ``chosen rejected`` for preference pairs) holds a
conversation, a list of ``{"role": ..., "content": ...}`` turns, and gives two token files,
``{prefix}_{key}_document`` (the tokens) and ``{prefix}_{key}_label_document`` (int32 labels,
``IGNORE_INDEX`` -100 where no loss is taken), document for document.

The conversation is rendered by transformers' ``apply_chat_template`` (the template in the
tokenizer directory's ``tokenizer_config.json`` or ``chat_template.jinja``, jinja as transformers
runs it) and tokenized as ``apply_chat_template(..., tokenize=True)`` tokenizes it, so the token
file holds exactly its ids, then the tokenizer's EOS (GPT-NeoX appends it too). A turn owns the
text its rendering adds to the previous turns' (with the generation prompt when the next turn is
the generation role's and the prompt starts it: the prompt belongs to the turn before), and a
token belongs to the turn its first character is in. Labels:

- default: the tokens of the ``--generation-role`` turns (``assistant``), -100 elsewhere; the EOS
  is labelled when the last turn is;
- ``--only-last``: only the last turn's tokens, if it is the generation role's;
- ``--no-mask``: every token;
- ``--for-rm``: only the EOS (a reward model reads its score there).

With ``--reward-key KEY`` (KTO's unpaired data: each conversation desirable or not) a third file,
``{prefix}_{key}_reward_document`` (float32, GPT-NeoX's ``*_reward_data_paths``), holds the
conversation's reward at each labelled token and 0 elsewhere: ``true`` is +1, ``false`` -1, a
number itself.

Where GPT-NeoX differs (its script at its current head): its masked path appends each turn's
whole rendering of the conversation so far, so earlier turns repeat in the tokens, and its
``--no-mask`` path appends the EOS twice (the label list is the token list); here the tokens are
the conversation rendered once, as ``apply_chat_template`` gives them.

Bad input stops the run with one line naming the document (FILE:LINE and the key): a line that
is not JSON, a key that is missing or not a list of turns, a turn without a string ``role`` and
``content``, an empty turn, a conversation without the generation role's turn where labels need
one, a template that fails to render or does not render turn by turn. Nothing is written under
the output names unless every conversation was: see `writing_together`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from neox_data.corpus import open_lines, resolve_paths
from neox_data.dependency import import_optional
from neox_data.gpt_dataset import IGNORE_INDEX
from neox_data.token_file import TokenFileWriter, best_dtype, writing_together

logger = logging.getLogger(__name__)

DEFAULT_CHAT_KEYS = ("messages",)


class ChatError(ValueError):
    """A conversation that cannot be preprocessed; the message starts with FILE:LINE [key]."""


@dataclass(frozen=True)
class ChatOptions:
    """Which tokens take a loss (see the module's docstring)."""

    generation_role: str = "assistant"
    mask: bool = True  # False: --no-mask, every token labelled
    only_last: bool = False
    for_rm: bool = False

    def __post_init__(self) -> None:
        if not self.generation_role:
            raise ValueError("--generation-role must not be empty")
        chosen = [
            flag
            for flag, on in (
                ("--no-mask", not self.mask),
                ("--only-last", self.only_last),
                ("--for-rm", self.for_rm),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} exclude each other: choose one")


@dataclass(frozen=True)
class ChatResult:
    outputs: Mapping[str, Path]  # file key ("messages", "messages_label", ...) -> prefix
    conversations: int  # per JSON key
    tokens: int  # token-file tokens over every key, EOS included
    labelled: int  # tokens that take a loss, over every key
    seconds: float

    def summary(self) -> str:
        share = self.labelled / max(self.tokens, 1)
        return (
            f"{self.conversations} conversations, {self.tokens} tokens, {self.labelled} "
            f"labelled ({share:.1%}), {self.seconds:.1f} s"
        )


def chat_prefixes(output_prefix: str | Path, key: str) -> tuple[Path, Path]:
    """GPT-NeoX's names: the tokens' and the labels' token-file prefixes of one JSON key."""
    return Path(f"{output_prefix}_{key}_document"), Path(f"{output_prefix}_{key}_label_document")


class ChatTokenizer:
    """A tokenizer directory's transformers tokenizer and chat template (extra ``chat``)."""

    def __init__(self, path: str | Path) -> None:
        transformers = import_optional("transformers", "chat", "preprocess-chat")
        import_optional("jinja2", "chat", "preprocess-chat")
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"--tokenizer-path {path}: no such directory (a tokenizer directory with "
                "tokenizer.json and tokenizer_config.json)"
            )
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(directory), local_files_only=True
            )
        except (OSError, ValueError) as err:
            raise ValueError(f"--tokenizer-path {path}: cannot load a tokenizer: {err}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"--tokenizer-path {path}: the tokenizer has no chat template (chat_template in "
                "tokenizer_config.json, or chat_template.jinja)"
            )
        if not self.tokenizer.is_fast:
            raise ValueError(f"--tokenizer-path {path}: needs a fast tokenizer (tokenizer.json)")
        self.eos_id: int | None = self.tokenizer.eos_token_id
        self.vocab_size = len(self.tokenizer)

    def render(self, turns: list[dict[str, str]], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=generation_prompt
        )
        if not isinstance(text, str):
            raise TypeError(f"the chat template rendered {type(text).__name__}, not text")
        return text

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids as apply_chat_template(tokenize=True) gives them, and each one's character span."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def build_chat(
    turns: Any, tokenizer: ChatTokenizer, options: ChatOptions
) -> tuple[list[int], list[int]]:
    """One conversation -> (tokens, labels) of equal length; raises ValueError saying what is
    wrong with it (the caller names the document)."""
    turns = _checked_turns(turns)
    role = options.generation_role
    labelled_turns = _labelled_turns(turns, options)
    text = _render(tokenizer, turns, False)
    ends: list[int] = []  # where each turn's text ends
    for i in range(len(turns)):
        # the generation prompt before a generation-role turn, where the template's prompt is
        # that turn's start (templates prompt the assistant: not another generation role)
        prompt = i + 1 < len(turns) and turns[i + 1]["role"] == role
        prefix = _render(tokenizer, turns[: i + 1], prompt)
        if prompt and not text.startswith(prefix):
            prefix = _render(tokenizer, turns[: i + 1], False)
        if not text.startswith(prefix) or (ends and len(prefix) < ends[-1]):
            raise ValueError(
                f"the chat template does not render turn by turn: the conversation up to turn "
                f"{i} is not the start of the whole one, so its turns' tokens cannot be told apart"
            )
        ends.append(len(prefix))
    tokens, spans = tokenizer.encode(text)
    if not tokens:
        raise ValueError("the chat template rendered no tokens")
    starts = np.array([span[0] for span in spans])
    turn_of = np.searchsorted(np.array(ends), starts, side="right")  # each token's turn
    keep = (
        np.isin(turn_of, sorted(labelled_turns)) if labelled_turns else np.zeros(len(tokens), bool)
    )
    if not options.mask:
        keep[:] = True
    ids = np.array(tokens, dtype=np.int64)
    labels = np.where(keep, ids, IGNORE_INDEX).tolist()
    eos = tokenizer.eos_id
    if eos is None:
        if options.for_rm:
            raise ValueError("--for-rm labels the EOS token, and the tokenizer has none")
        return tokens, labels
    last_labelled = not options.mask or (len(turns) - 1) in labelled_turns or options.for_rm
    return [*tokens, eos], [*labels, eos if last_labelled else IGNORE_INDEX]


def _render(tokenizer: ChatTokenizer, turns: list[dict[str, str]], prompt: bool) -> str:
    try:
        return tokenizer.render(turns, generation_prompt=prompt)
    except Exception as err:  # jinja's errors, a template's raise_exception(), ...
        raise ValueError(
            f"the chat template does not render: {type(err).__name__}: {err}"
        ) from None


def _checked_turns(turns: Any) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        kind = "an empty list" if isinstance(turns, list) else type(turns).__name__
        raise ValueError(f"expected a list of turns ({{'role': ..., 'content': ...}}), got {kind}")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i} is {type(turn).__name__}, not an object")
        for field in ("role", "content"):
            if not isinstance(turn.get(field), str):
                raise ValueError(f"turn {i} has no string {field!r}")
        if not turn["content"].strip():
            raise ValueError(f"turn {i} ({turn['role']}) is empty")
    return turns


def _labelled_turns(turns: list[dict[str, str]], options: ChatOptions) -> set[int]:
    """The turns whose tokens take a loss (--no-mask: every token, handled by the caller)."""
    role = options.generation_role
    if options.for_rm or not options.mask:
        return set()
    last = len(turns) - 1
    if options.only_last:
        if turns[last]["role"] != role:
            raise ValueError(
                f"--only-last labels the last turn, which is {turns[last]['role']!r}, not {role!r}"
            )
        return {last}
    chosen = {i for i, turn in enumerate(turns) if turn["role"] == role}
    if not chosen:
        raise ValueError(f"no {role!r} turn: nothing to learn (--generation-role)")
    return chosen


def preprocess_chat(
    inputs: str | Path | Iterable[str | Path],
    output_prefix: str | Path,
    tokenizer_path: str | Path,
    *,
    jsonl_keys: Sequence[str] = DEFAULT_CHAT_KEYS,
    options: ChatOptions | None = None,
    num_docs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    reward_key: str | None = None,
) -> ChatResult:
    """Write the token and label files of every conversation of ``inputs`` (JSON lines, also
    .gz / .zst), one pair per JSON key (and with ``reward_key`` a reward file). See the
    module's docstring."""
    options = options or ChatOptions()
    if not jsonl_keys or len(set(jsonl_keys)) != len(jsonl_keys):
        raise ValueError(f"--jsonl-keys needs distinct keys, got {list(jsonl_keys)}")
    paths = resolve_paths(inputs)
    tokenizer = ChatTokenizer(tokenizer_path)
    dtype = best_dtype(tokenizer.vocab_size)
    writers: dict[str, TokenFileWriter] = {}
    for key in jsonl_keys:
        tokens_prefix, labels_prefix = chat_prefixes(output_prefix, key)
        writers[key] = TokenFileWriter(tokens_prefix, dtype, overwrite=overwrite)
        writers[f"{key}_label"] = TokenFileWriter(labels_prefix, np.int32, overwrite=overwrite)
        if reward_key is not None:
            writers[f"{key}_reward"] = TokenFileWriter(
                f"{output_prefix}_{key}_reward_document",
                np.float32,
                overwrite=overwrite,
                floats=True,
            )
    start = time.perf_counter()
    conversations = tokens = labelled = 0
    bar = tqdm(
        total=num_docs, unit="conversations", desc="chat", file=sys.stderr, disable=not progress
    )
    with writing_together(list(writers.values())), bar:
        for where, record in _records(paths):
            for key in jsonl_keys:
                if key not in record:
                    raise ChatError(
                        f"{where}: missing key {key!r} (keys present: {sorted(record)})"
                    )
                try:
                    ids, labels = build_chat(record[key], tokenizer, options)
                except ValueError as err:
                    raise ChatError(f"{where} [{key}]: {err}") from None
                writers[key].add_documents(np.array(ids), np.array([len(ids)]))
                writers[f"{key}_label"].add_documents(
                    np.array(labels, dtype=np.int32), np.array([len(labels)])
                )
                if reward_key is not None:
                    reward = _reward(record, reward_key, where)
                    values = np.where(np.array(labels) != IGNORE_INDEX, reward, 0.0)
                    writers[f"{key}_reward"].add_document(values)
                tokens += len(ids)
                labelled += sum(label != IGNORE_INDEX for label in labels)
            conversations += 1
            bar.update(1)
    outputs = {key: writer.prefix for key, writer in writers.items()}
    result = ChatResult(outputs, conversations, tokens, labelled, time.perf_counter() - start)
    logger.info("%s", result.summary())
    return result


def _reward(record: dict[str, Any], key: str, where: str) -> float:
    """A conversation's reward: true +1, false -1, or a finite number."""
    if key not in record:
        raise ChatError(f"{where}: missing reward key {key!r} (keys present: {sorted(record)})")
    value = record[key]
    if isinstance(value, bool):
        return 1.0 if value else -1.0
    if isinstance(value, int | float) and np.isfinite(value):
        return float(value)
    raise ChatError(f"{where}: reward {key!r} must be true, false or a number, got {value!r}")


def _records(paths: Sequence[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(FILE:LINE, the JSON object) of every non-blank line."""
    for path in paths:
        with open_lines(path) as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise ChatError(f"{where}: not a JSON line: {err}") from None
                if not isinstance(record, dict):
                    raise ChatError(f"{where}: expected a JSON object, got {type(record).__name__}")
                yield where, record
