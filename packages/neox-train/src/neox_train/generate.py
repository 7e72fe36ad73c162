"""Sampling tokens from a model: greedy, or temperature with top-k and top-p (nucleus).

With the KV cache (the default) the prompt runs once and each new token costs a single-token
forward; `recompute` reruns the whole context instead. A context longer than the model's
positions is cut from the left (and the cache rebuilt). Every tensor-parallel rank computes the
same logits and draws with the same generator, so all ranks pick the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from neox_model import Transformer


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1 (or 0): no nucleus filter


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """logits (vocab,) -> a token id."""
    if sampling.temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    if sampling.top_k:
        sorted_probs[sampling.top_k :] = 0.0
    if 0.0 < sampling.top_p < 1.0:
        # keep the smallest prefix whose mass reaches top_p (always at least the first token)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        sorted_probs[outside] = 0.0
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
    return int(order[choice])


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: list[int],
    max_new_tokens: int,
    *,
    vocab_size: int,
    sampling: Sampling = Sampling(),
    stop: Callable[[list[int]], bool] | None = None,
    generator: torch.Generator | None = None,
    recompute: bool = False,
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """The new token ids after `prompt`, at most max_new_tokens; ends once `stop(new ids)` is
    true. Only the first `vocab_size` logits count: the embedding's padding rows never appear.
    `on_token` sees each new id as it is chosen (streaming)."""
    if not prompt:
        raise ValueError("the prompt encodes to no tokens")
    model.eval()
    device = next(model.parameters()).device
    limit = model.config.max_positions
    ids, new, cache, pending = list(prompt), [], None, list(prompt)
    for _ in range(max_new_tokens):
        if recompute:
            cache, pending = None, ids[-limit:]
        elif cache is None or cache.length + len(pending) > limit:
            cache, pending = model.new_cache(batch=1), ids[-limit:]
        logits = model(torch.tensor([pending], device=device), cache=cache)[0, -1, :vocab_size]
        new.append(next_token(logits, sampling, generator))
        ids.append(new[-1])
        pending = new[-1:]
        if on_token is not None:
            on_token(new[-1])
        if stop is not None and stop(new):
            break
    return new
