"""ALiBi: attention with linear biases (Press et al., 2022, "Train Short, Test Long").

Head h adds slope_h * -(i - j) to the score of query i for key j. Slopes are the geometric
sequence of the paper; for a head count that is not a power of two, the slopes of the next lower
power of two are followed by every other slope of the next higher one.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """(num_heads,) float32 slopes, in head order."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start**i for i in range(1, n + 1)]

    if math.log2(num_heads).is_integer():
        return torch.tensor(power_of_two(num_heads))
    lower = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(power_of_two(lower) + extra)


def alibi_bias(
    slopes: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor
) -> torch.Tensor:
    """(heads, q, k) additive bias: -slope * (query position - key position)."""
    distance = (q_positions[:, None] - k_positions[None, :]).float()  # (q, k)
    return -slopes[:, None, None].to(distance.device) * distance
