"""Text generation from a trained model: greedy decoding, or temperature with top-p sampling.

The prompt is run once to fill a KV cache; each new token then costs one single-token forward.
A context longer than the model's positions is cut from the left (and the cache rebuilt).
"""

from __future__ import annotations

import torch

from neox_model import Transformer


def next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """logits (vocab,) -> a token id: argmax when temperature is 0, else nucleus sampling."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    # keep the smallest prefix whose mass reaches top_p (always at least the first token)
    outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
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
    stop_id: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The new token ids after `prompt`; stops early after `stop_id`.

    Only the first `vocab_size` logits are considered: the padding rows of the embedding are
    never produced.
    """
    if not prompt:
        raise ValueError("the prompt encodes to no tokens")
    model.eval()
    device = next(model.parameters()).device
    limit = model.config.max_positions
    ids, cache, pending = list(prompt), None, list(prompt)
    for _ in range(max_new_tokens):
        if cache is None or cache.length + len(pending) > limit:
            cache, pending = model.new_cache(batch=1), ids[-limit:]
        logits = model(torch.tensor([pending], device=device), cache=cache)[0, -1, :vocab_size]
        ids.append(next_token(logits, temperature, top_p, generator))
        pending = ids[-1:]
        if ids[-1] == stop_id:
            break
    return ids[len(prompt) :]
