"""The progress line: step, loss, learning rate, tokens/s, elapsed time and ETA."""

from __future__ import annotations

import time
from collections.abc import Callable


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(
        self,
        total_steps: int,
        start_step: int,
        tokens_per_step: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.start, self.tokens_per_step = total_steps, start_step, tokens_per_step
        self.clock = clock
        self.began = clock()
        self.step, self.loss, self.lr = start_step, float("nan"), 0.0

    def update(self, step: int, loss: float, lr: float) -> None:
        self.step, self.loss, self.lr = step, loss, lr

    def rates(self) -> dict[str, float]:
        """Elapsed seconds, steps/s and tokens/s since the start, and the seconds left."""
        elapsed = self.clock() - self.began
        steps_per_s = (self.step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.step) / steps_per_s if steps_per_s else 0.0
        return {
            "elapsed_s": elapsed,
            "steps_per_s": steps_per_s,
            "tokens_per_s": steps_per_s * self.tokens_per_step,
            "eta_s": eta,
        }

    def line(self) -> str:
        rates = self.rates()
        return (
            f"step {self.step}/{self.total} | loss {self.loss:.4f} | lr {self.lr:.3e} | "
            f"{rates['tokens_per_s']:,.0f} tokens/s | elapsed {_clock(rates['elapsed_s'])} | "
            f"ETA {_clock(rates['eta_s'])}"
        )
