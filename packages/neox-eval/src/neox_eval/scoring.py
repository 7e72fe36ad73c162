"""Log-likelihood of continuations given contexts, in batches of right-padded token windows.

Each request is a (context ids, continuation ids) pair. The model reads the last `max_length`
tokens of context + continuation without its final token; the log-probabilities of the
continuation are read from the last positions of that window (a causal model never looks right,
so the padding after a shorter window changes nothing before it):

    ids      c0 c1 c2 | x0 x1 x2     score: log p(x0 | ..c2) + log p(x1 | ..x0) + log p(x2 | ..x1)
    window   c0 c1 c2   x0 x1        (the context cut from the left when the window is too long)

This is how lm-eval's Hugging Face backend scores, so the numbers agree with it to float error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TokenPair = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the continuation's token log-probabilities
    greedy: bool  # whether greedy decoding would produce exactly the continuation


def window(context: Sequence[int], continuation: Sequence[int], max_length: int) -> list[int]:
    """The model input for a pair: at most `max_length` ids, ending just before the last
    continuation token."""
    if not continuation:
        raise ValueError("a continuation encodes to no tokens: nothing to score")
    if len(continuation) > max_length:
        raise ValueError(
            f"a continuation of {len(continuation)} tokens does not fit in seq_length "
            f"{max_length}; raise seq_length (at most the model's positions)"
        )
    return [*context, *continuation][-(max_length + 1) :][:-1]


def longest_first(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of `batch_size`, longest first (the first batch shows the memory
    needed; similar lengths share a batch and waste little padding)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def score_pairs(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    pairs: Sequence[TokenPair],
    *,
    max_length: int,
    batch_size: int,
    rows: int,
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> list[Score]:
    """The `Score` of every pair, in the given order. `logits_of(ids)` maps (batch, seq) ids to
    (batch, seq, >= rows) logits; the softmax is over the first `rows` of them."""
    windows = [window(context, continuation, max_length) for context, continuation in pairs]
    scores: list[Score | None] = [None] * len(pairs)
    for batch in longest_first([len(w) for w in windows], batch_size):
        longest = len(windows[batch[0]])
        ids = torch.zeros(len(batch), longest, dtype=torch.long)
        for row, index in enumerate(batch):
            ids[row, : len(windows[index])] = torch.tensor(windows[index])
        logprobs = F.log_softmax(logits_of(ids.to(device))[..., :rows].float(), dim=-1)
        for row, index in enumerate(batch):
            continuation = torch.tensor(pairs[index][1], device=device)
            end = len(windows[index])
            scores[index] = _score(logprobs[row, end - len(continuation) : end], continuation)
        if on_batch is not None:
            on_batch(len(batch))
    done = [score for score in scores if score is not None]
    assert len(done) == len(pairs), "every pair is in exactly one batch"
    return done


def _score(logprobs: torch.Tensor, continuation: torch.Tensor) -> Score:
    """logprobs (n, rows) at the positions predicting the n continuation tokens."""
    picked = logprobs.gather(1, continuation[:, None])  # (n, 1)
    greedy = bool((logprobs.argmax(dim=-1) == continuation).all())
    return Score(float(picked.sum()), greedy)
