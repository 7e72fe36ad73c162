"""Text continuation for `generate_until`: greedy or sampled, over the model's KV cache.

A batch holds prompts of one length (the model takes no padding mask), runs them once through
the model and then feeds one new token per row per step. A row stops when `finished(its new ids)`
says so (an end-of-document token, a stop string); the batch stops when every row has, or after
`max_new_tokens`. Under tensor parallelism every rank computes the same gathered logits and draws
with an identically seeded generator, so every rank picks the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neox_model import Transformer

# lm-eval's generation options (after its normalize_gen_kwargs) that this module understands
OPTIONS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: the most likely one, or drawn from the softmax at
    `temperature` restricted to the `top_k` most likely (0: all) and the smallest set holding
    `top_p` of the probability (1: all)."""

    do_sample: bool = False
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Sampling:
        """From a task's generation options; an option neox-eval does not implement is an error
        rather than silently ignored."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"generation option(s) {', '.join(unknown)} are not supported by neox-eval; "
                f"supported: {', '.join(OPTIONS)}"
            )
        do_sample = bool(options.get("do_sample", False))
        return cls(
            do_sample=do_sample,
            temperature=float(options.get("temperature", 1.0 if do_sample else 0.0)),
            top_k=int(options.get("top_k") or 0),
            top_p=float(options.get("top_p") or 1.0),
        )

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0.0


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """logits (batch, vocab) -> the next token of each row, (batch,)."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_k:
        kth = probs.topk(min(sampling.top_k, probs.shape[-1]), dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if 0.0 < sampling.top_p < 1.0:
        ordered, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always the most likely token)
        outside = ordered.cumsum(dim=-1) - ordered >= sampling.top_p
        probs = torch.zeros_like(probs).scatter(-1, order, ordered.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def equal_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size` prompts of one length, longest
    first."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        last = batches[-1] if batches else None
        if last is not None and len(last) < batch_size and lengths[last[0]] == lengths[index]:
            last.append(index)
        else:
            batches.append([index])
    return batches


@torch.no_grad()
def continue_batch(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    rows: int,
    sampling: Sampling,
    finished: Callable[[list[int]], bool],
    generator: torch.Generator,
) -> list[list[int]]:
    """The new ids of each prompt (all of one length); only the first `rows` logits (the
    tokenizer's ids) are candidates."""
    if len({len(prompt) for prompt in prompts}) != 1 or not prompts[0]:
        raise ValueError("continue_batch needs non-empty prompts of one length")
    device = model.embed_in.weight.device
    cache = model.new_cache(len(prompts), max_length=len(prompts[0]) + max_new_tokens)
    pending = torch.tensor([list(prompt) for prompt in prompts], device=device)
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(max_new_tokens):
        chosen = pick(model(pending, cache=cache)[:, -1, :rows], sampling, generator)
        for row, token in enumerate(chosen.tolist()):
            if not done[row]:
                new[row].append(token)
                done[row] = finished(new[row])
        if all(done):
            break
        pending = chosen[:, None]
    return new
