"""`neox generate`: GPT-NeoX's three ways of sampling from a checkpoint.

    unconditional   num_samples samples that start from the end-of-document token
    input-file      every prompt of sample_input_file (separated by prompt_end), num_samples each
    interactive     a prompt loop in the terminal, the text streamed as it is generated

Samples are written to sample_output_file as JSON lines {"context", "text", "tokens"} (atomically,
at the end). Under tensor parallelism every rank runs the same loop; rank 0 reads and writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from neox_data import Tokenizer
from neox_model import Sampling, Transformer
from neox_train.config.schema import ConfigError
from neox_train.config.sections import TextGenConfig
from neox_train.generation.sampling import generate

PROMPT = "Context prompt >>> "


@dataclass(frozen=True)
class Sample:
    context: str
    text: str
    tokens: list[int]


def sampling_of(config: TextGenConfig) -> Sampling:
    return Sampling(config.temperature, config.top_k, config.top_p or 1.0)


def stop_condition(
    tokenizer: Tokenizer, stop_tokens: tuple[str, ...] | None
) -> Callable[[list[int]], bool]:
    """True once a sample ends with the end-of-document token or its text with a stop string."""

    def stop(new: list[int]) -> bool:
        if new[-1] == tokenizer.eod_id:
            return True
        return bool(stop_tokens) and tokenizer.decode(new).endswith(tuple(stop_tokens or ()))

    return stop


def sample(
    model: Transformer,
    tokenizer: Tokenizer,
    context: str,
    config: TextGenConfig,
    generator: torch.Generator,
    on_token: Callable[[int], None] | None = None,
) -> Sample:
    prompt = tokenizer.encode(context) if context else [tokenizer.eod_id]
    new = generate(
        model,
        prompt,
        config.maximum_tokens,
        vocab_size=tokenizer.vocab_size,
        sampling=sampling_of(config),
        stop=stop_condition(tokenizer, config.stop_tokens),
        generator=generator,
        recompute=config.recompute,
        on_token=on_token,
        compile=config.compile_decoding,
    )
    return Sample(context, tokenizer.decode(new), new)


def prompts_of(config: TextGenConfig) -> list[str]:
    if config.sample_input_file is None:
        raise ConfigError("text_gen_type input-file needs sample_input_file")
    path = Path(config.sample_input_file)
    if not path.is_file():
        raise ConfigError(f"sample_input_file {path} not found")
    return [p.strip() for p in path.read_text().split(config.prompt_end) if p.strip()]


def batch_samples(
    model: Transformer, tokenizer: Tokenizer, config: TextGenConfig, generator: torch.Generator
) -> Iterator[Sample]:
    """The samples of the unconditional and input-file modes."""
    contexts = [""] if config.text_gen_type == "unconditional" else prompts_of(config)
    for context in contexts:
        for _ in range(config.num_samples):
            yield sample(model, tokenizer, context, config, generator)


def write_samples(samples: Iterator[Sample], path: str, rank: int) -> int:
    """Write JSON lines atomically (rank 0); every rank consumes the samples. Returns the count."""
    records = [asdict(s) for s in samples]
    if rank == 0:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, target)
    return len(records)


def _shared(value: Any) -> Any:
    """Rank 0's value on every rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def interactive(
    model: Transformer,
    tokenizer: Tokenizer,
    config: TextGenConfig,
    generator: torch.Generator,
    read: Callable[[str], str],
    write: Callable[[str], None],
    rank: int,
) -> None:
    """Prompt, stream the continuation, repeat; ends at end of input. The KV cache is new for
    every prompt."""
    while True:
        line: str | None = None
        if rank == 0:
            try:
                line = read(PROMPT)
            except EOFError:
                line = None
        line = _shared(line)
        if line is None:
            return
        sample(model, tokenizer, line, config, generator, Streamer(tokenizer, write, rank == 0))
        if rank == 0:
            write("\n")


class Streamer:
    """Writes a sample's text as it grows: only the characters not written yet."""

    def __init__(self, tokenizer: Tokenizer, write: Callable[[str], None], enabled: bool) -> None:
        self.tokenizer, self.write, self.enabled = tokenizer, write, enabled
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if self.enabled and len(text) > self.shown:
            self.write(text[self.shown :])
        self.shown = len(text)
