"""Choosing the next token from the logits: the most likely one (greedy), or one drawn from the
softmax at a temperature, restricted to the `top_k` most likely tokens and to the smallest set of
them holding `top_p` of the probability (nucleus sampling, Holtzman et al., 2020, "The Curious
Case of Neural Text Degeneration").

Generation (`neox generate`) and evaluation (neox-eval's `generate_until`) both draw here. Given
the same logits and a generator in the same state, every tensor-parallel rank picks the same
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1 (or 0): no nucleus filter

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def next_tokens(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None
) -> torch.Tensor:
    """logits (batch, vocab) -> the next token of each row, (batch,); or (vocab,) -> ()."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)  # (..., vocab), likeliest first
    if sampling.top_k:
        ordered[..., sampling.top_k :] = 0.0
    if 0.0 < sampling.top_p < 1.0:
        # keep the smallest prefix whose mass reaches top_p (always at least the first token)
        outside = ordered.cumsum(dim=-1) - ordered >= sampling.top_p
        ordered = ordered.masked_fill(outside, 0.0)
    choice = torch.multinomial(ordered, 1, generator=generator)  # (..., 1), a place in `order`
    return order.gather(-1, choice)[..., 0]


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """logits (vocab,) -> a token id."""
    return int(next_tokens(logits, sampling, generator))
