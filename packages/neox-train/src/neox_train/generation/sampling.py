"""Sampling tokens from a model: greedy, or temperature with top-k and top-p (nucleus), each
token chosen by neox-model's sampler (`neox_model.Sampling`, `next_token`).

With the KV cache (the default) the prompt runs once and each new token costs a single-token
forward; `recompute` reruns the whole context instead. A context longer than the model's
positions is cut from the left (and the cache rebuilt). `compile` runs those single-token steps as
one graph compiled by `torch.compile` over a static cache (see `neox_model.KVCache`) sized to
prompt + new tokens in steps of 64 positions: compiled on the first step (seconds), reused for
every step and every later call on the model, whatever its length (the cache's length is dynamic
to the compiler, see `neox_model.KVCache`).
Every tensor-parallel rank computes the same logits and draws with the same generator, so all
ranks pick the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neox_model import KVCache, Sampling, Transformer, next_token
from neox_train.config.schema import ConfigError

GREEDY = Sampling()


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: list[int],
    max_new_tokens: int,
    *,
    vocab_size: int,
    sampling: Sampling = GREEDY,
    stop: Callable[[list[int]], bool] | None = None,
    generator: torch.Generator | None = None,
    recompute: bool = False,
    on_token: Callable[[int], None] | None = None,
    compile: bool = False,
) -> list[int]:
    """The new token ids after `prompt`, at most max_new_tokens; ends once `stop(new ids)` is
    true. Only the first `vocab_size` logits count: the embedding's padding rows never appear.
    `on_token` sees each new id as it is chosen (streaming)."""
    if not prompt:
        raise ConfigError("the prompt encodes to no tokens")
    if compile and (recompute or model.tp.size > 1):
        raise ConfigError(
            "compiled decoding (compile_decoding) needs the KV cache (not recompute) and one "
            f"tensor-parallel rank (this model has {model.tp.size})"
        )
    model.eval()
    device = next(model.parameters()).device
    limit = model.config.max_positions
    step = compiled_last_logits() if compile else last_logits
    # a static cache is read whole at every step: no longer than this call needs (in steps of
    # 64 positions; its length is dynamic to the compiler, so one compiled step serves all)
    size = min(limit, -(-(len(prompt) + max_new_tokens) // 64) * 64)
    ids, new, cache, pending, stored = list(prompt), [], None, list(prompt), 0
    for _ in range(max_new_tokens):
        if recompute:
            cache, pending = None, ids[-limit:]
        elif cache is None or stored + len(pending) > cache.max_length:
            cache = model.new_cache(batch=1, max_length=size, static=compile)
            pending, stored = ids[-limit:], 0
        forward = step if len(pending) == 1 and cache is not None else last_logits
        logits = forward(model, torch.tensor([pending], device=device), cache)[:vocab_size]
        stored += len(pending)
        new.append(next_token(logits, sampling, generator))
        ids.append(new[-1])
        pending = new[-1:]
        if on_token is not None:
            on_token(new[-1])
        if stop is not None and stop(new):
            break
    return new


def compiled_last_logits() -> Callable[[Transformer, torch.Tensor, KVCache | None], torch.Tensor]:
    """`last_logits` compiled in one graph (no graph breaks; C++, not Python, calls the
    kernels), once: a static cache's length is symbolic, so every cache size shares it."""
    return torch.compile(last_logits, fullgraph=True, options={"cpp_wrapper": True})


def last_logits(model: Transformer, ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """ids (1, seq) after the cached ones -> the logits (padded vocab,) of the last position."""
    hidden = model.hidden_states(ids, cache)[:, -1:]  # (1, 1, hidden)
    return model.logits(hidden)[0, -1]
