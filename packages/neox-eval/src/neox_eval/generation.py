"""Text continuation for `generate_until`: greedy or sampled, over the model's KV cache.

A batch holds prompts of one length (the model takes no padding mask), runs them once through
the model and then feeds one new token per row per step. A row stops when `finished(its new ids)`
says so (an end-of-document token, a stop string); the batch stops when every row has, or after
`max_new_tokens`. Each token is chosen by neox-model's sampler (`neox_model.next_tokens`). Under
tensor parallelism every rank computes the same gathered logits and draws with an identically
seeded generator, so every rank picks the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from neox_model import Sampling, Transformer, next_tokens

# lm-eval's generation options (after its normalize_gen_kwargs) that this module understands
OPTIONS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")


def sampling_of(options: Mapping[str, Any]) -> Sampling:
    """How a task's generation options choose the next token: greedy unless `do_sample`, then
    at `temperature` (default 1) among the `top_k` most likely (0: all) and the smallest set
    holding `top_p` of the probability (1: all). An option neox-eval does not implement is an
    error rather than silently ignored."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"generation option(s) {', '.join(unknown)} are not supported by neox-eval; "
            f"supported: {', '.join(OPTIONS)}"
        )
    if not options.get("do_sample", False):
        return Sampling()
    return Sampling(
        temperature=float(options.get("temperature", 1.0)),
        top_k=int(options.get("top_k") or 0),
        top_p=float(options.get("top_p") or 1.0),
    )


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
        chosen = next_tokens(model(pending, cache=cache)[:, -1, :rows], sampling, generator)
        for row, token in enumerate(chosen.tolist()):
            if not done[row]:
                new[row].append(token)
                done[row] = finished(new[row])
        if all(done):
            break
        pending = chosen[:, None]
    return new
