"""The progress line and the numbers behind it: step, loss, learning rate, gradient norm, loss
scale (fp16), tokens/s, samples/s, TFLOP/s and MFU per device, memory, elapsed time and ETA.

Each record holds this step's own figures (`step_time_s`, `step_tokens_per_s`,
`step_tflops_per_device`, `step_mfu`, `step_hfu`: the time since the previous record, so that a
benchmark can leave out warm-up steps) beside the running averages since the run (re)started
(`tokens_per_s`, `tflops_per_device`, `mfu`, `hfu`). TFLOP/s and MFU count model FLOPs;
`*hardware_tflops_per_device` and HFU count recomputation too (`neox_train.monitoring.flops`).
"""

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
    flops_per_step: float  # model FLOPs, all devices together
    devices: int
    peak_tflops: float | None  # per device; None: no MFU
    hardware_flops_per_step: float | None = None  # with recomputation; None: as flops_per_step


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
        self.began = self.last_time = clock()
        self.step = start_step

    def rates(self, step: int) -> dict[str, float]:
        """Elapsed seconds, this step's figures and the running averages since the start, and
        the seconds left, after `step`."""
        now, previous = self.clock(), self.step
        self.step = step
        elapsed = now - self.began
        steps_per_s = (step - self.start) / elapsed if elapsed > 0 else 0.0
        step_time = (now - self.last_time) / (step - previous) if step > previous else 0.0
        self.last_time = now
        rates = {
            "elapsed_s": elapsed,
            "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * self.throughput.samples_per_step,
            "eta_s": (self.total - step) / steps_per_s if steps_per_s else 0.0,
            "memory_gib": memory_gib(),
            "step_time_s": step_time,
            **self._per_second(steps_per_s, ""),
            **self._per_second(1 / step_time if step_time > 0 else 0.0, "step_"),
        }
        return rates

    def _per_second(self, steps_per_s: float, prefix: str) -> dict[str, float]:
        """Tokens/s, model and hardware TFLOP/s per device, MFU and HFU at `steps_per_s`."""
        t = self.throughput
        tflops = steps_per_s * t.flops_per_step / t.devices / 1e12
        hardware = t.hardware_flops_per_step or t.flops_per_step
        hardware_tflops = steps_per_s * hardware / t.devices / 1e12
        rates = {
            f"{prefix}tokens_per_s": steps_per_s * t.tokens_per_step,
            f"{prefix}tflops_per_device": tflops,
            f"{prefix}hardware_tflops_per_device": hardware_tflops,
        }
        if t.peak_tflops:
            rates[f"{prefix}mfu"] = tflops / t.peak_tflops
            rates[f"{prefix}hfu"] = hardware_tflops / t.peak_tflops
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
        if values.get("moe_load_balancing_loss") is not None:
            parts.append(
                f"moe balance {values['moe_load_balancing_loss']:.3f} "
                f"(expert shares {values['moe_min_expert_share']:.3f}-"
                f"{values['moe_max_expert_share']:.3f})"
            )
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
