"""Alternating timed runs, and the median / min / max every benchmark prints.

Runs compared with each other are called in turn, one call each per round, so that whatever
else loads the machine hits them alike; ratios are taken within a round and summarised over
the rounds, never the best run of one against the best of the other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence


def time_rounds(runs: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call of each run: `rounds` rounds, each calling every run once in turn."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def ratios(reference: Sequence[float], ours: Sequence[float]) -> list[float]:
    """Round by round, reference seconds / our seconds: > 1 means ours is faster."""
    return [theirs / mine for theirs, mine in zip(reference, ours, strict=True)]


def spread(values: Sequence[float]) -> str:
    """'median M (min A, max B)' of `values`."""
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"
