"""Predicted speed of a planned run: step time, tokens/s and MFU on a given GPU.

The GPUs are taken to run the step's hardware FLOPs (`StepFlops.hardware`: model FLOPs plus the
recomputed forward passes) at a fraction of their dense bf16/fp16 peak (`PEAK_TFLOPS`), and a
pipeline to idle for its bubble on top: (p - 1) / m of the compute time for p stages and m
micro-batches per step under 1F1B (Narayanan et al., 2021, section 2.2). So

    step time = hardware FLOPs / (GPUs x peak x fraction) x (1 + (p - 1) / m)
    MFU = model FLOPs / (step time x GPUs x peak)

The default fraction is measured, not hoped for: GPT-NeoX-20B trained at 117 TFLOP/s per A100
(hardware FLOPs, activation checkpointing on; Black et al., 2022, section 4), 37.5% of the
A100's 312, on 4 pipeline stages with 32 micro-batches per step; without that run's bubble
(3/32 of its compute time) the fraction is 0.41. `neox plan --achievable` replaces it with a
figure measured on one's own cluster (`benchmarks/bench_gpu_mfu.py` prints HFU).
"""

from __future__ import annotations

from dataclasses import dataclass

from neox_model import ParallelDims
from neox_train.config.batch import BatchLayout
from neox_train.config.schema import ConfigError
from neox_train.monitoring.flops import PEAK_TFLOPS, StepFlops, peak_tflops

GPT_NEOX_20B_HFU = 117.0 / 312.0  # measured: TFLOP/s per A100 over its peak
GPT_NEOX_20B_BUBBLE = (4 - 1) / 32  # its pipeline: 4 stages, 32 micro-batches per step
ACHIEVABLE = round(GPT_NEOX_20B_HFU * (1 + GPT_NEOX_20B_BUBBLE), 2)  # 0.41
DEFAULT_GPU = "A100"


@dataclass(frozen=True)
class Prediction:
    gpu: str
    peak_tflops: float  # one GPU's dense bf16/fp16 peak
    achievable: float  # the fraction of peak the compute runs at, bubble aside
    bubble: float  # the pipeline's idle time, as a fraction of the compute time
    step_seconds: float
    tokens_per_second: float
    mfu: float
    hfu: float


def predict(
    flops: StepFlops,
    layout: ParallelDims,
    batch: BatchLayout,
    tokens_per_step: int,
    gpu: str = DEFAULT_GPU,
    achievable: float = ACHIEVABLE,
) -> Prediction:
    """The predicted speed of a step of `flops` on `layout` over GPUs named `gpu`."""
    if not 0 < achievable <= 1:
        raise ConfigError(f"--achievable is a fraction of peak in (0, 1], got {achievable}")
    peak = peak_tflops(gpu, None)
    if peak is None:
        known = ", ".join(name for name, _ in PEAK_TFLOPS)
        raise ConfigError(f"--gpu {gpu!r}: no known peak; one of: {known}")
    bubble = (layout.pipe - 1) / batch.grad_accum
    total_peak = layout.world_size * peak * 1e12  # FLOP/s
    step = flops.hardware / (total_peak * achievable) * (1 + bubble)
    return Prediction(
        gpu=gpu,
        peak_tflops=peak,
        achievable=achievable,
        bubble=bubble,
        step_seconds=step,
        tokens_per_second=tokens_per_step / step,
        mfu=flops.model / (step * total_peak),
        hfu=flops.hardware / (step * total_peak),
    )


def describe_prediction(prediction: Prediction) -> str:
    """The `speed:` line of `neox plan`."""
    p = prediction
    bubble = f", pipeline bubble {p.bubble:.0%} of compute" if p.bubble else ""
    source = "GPT-NeoX-20B's measured figure" if p.achievable == ACHIEVABLE else "--achievable"
    return (
        f"speed on {p.gpu} ({p.peak_tflops:g} TFLOP/s peak) at {p.achievable:.0%} of peak "
        f"({source}){bubble}: {p.step_seconds:.3g} s per step, {p.tokens_per_second:,.0f} "
        f"tokens/s, MFU {p.mfu:.1%} (HFU {p.hfu:.1%})"
    )
