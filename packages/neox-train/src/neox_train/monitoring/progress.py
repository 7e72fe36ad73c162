"""The progress line and the numbers behind it: step, loss, learning rate, gradient norm, loss
scale (fp16), tokens/s, samples/s, TFLOP/s and MFU per device, memory, elapsed time and ETA."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class Throughput:
    tokens_per_step: int
    samples_per_step: int
    flops_per_step: float  # all devices together
    devices: int
    peak_tflops: float | None  # per device; None: no MFU


def memory_gib() -> float:
    """Peak memory of this process: GPU memory allocated by torch, else resident CPU memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Progress:
    def __init__(
        self,
        total_steps: int,
        start_step: int,
        throughput: Throughput,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.start, self.throughput = total_steps, start_step, throughput
        self.clock = clock
        self.began = clock()
        self.step = start_step

    def rates(self, step: int) -> dict[str, float]:
        """Elapsed seconds, rates since the start, and the seconds left, after `step`."""
        self.step = step
        t = self.throughput
        elapsed = self.clock() - self.began
        steps_per_s = (step - self.start) / elapsed if elapsed > 0 else 0.0
        tflops = steps_per_s * t.flops_per_step / t.devices / 1e12
        rates = {
            "elapsed_s": elapsed,
            "steps_per_s": steps_per_s,
            "tokens_per_s": steps_per_s * t.tokens_per_step,
            "samples_per_s": steps_per_s * t.samples_per_step,
            "tflops_per_device": tflops,
            "eta_s": (self.total - step) / steps_per_s if steps_per_s else 0.0,
            "memory_gib": memory_gib(),
        }
        if t.peak_tflops:
            rates["mfu"] = tflops / t.peak_tflops
        return rates

    def line(self, step: int, values: Mapping[str, Any]) -> str:
        parts = [
            f"step {step}/{self.total}",
            f"loss {values['train_loss']:.4f}",
            f"lr {values['lr']:.3e}",
        ]
        if values.get("grad_norm") is not None:
            parts.append(f"grad norm {values['grad_norm']:.3f}")
        if values.get("seqlen") is not None:
            parts.append(f"seqlen {values['seqlen']:.0f}")
        if values.get("loss_scale") is not None:
            parts.append(f"loss scale {values['loss_scale']:g}")
        parts += [
            f"{values['tokens_per_s']:,.0f} tokens/s",
            f"{values['samples_per_s']:,.1f} samples/s",
            f"{values['tflops_per_device']:.2f} TFLOP/s",
        ]
        if "mfu" in values:
            parts.append(f"MFU {100 * values['mfu']:.1f}%")
        parts += [
            f"mem {values['memory_gib']:.2f} GiB",
            f"elapsed {_clock(values['elapsed_s'])}",
            f"ETA {_clock(values['eta_s'])}",
        ]
        return " | ".join(parts)
