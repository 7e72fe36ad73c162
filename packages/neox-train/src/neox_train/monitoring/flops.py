"""Model FLOPs per step and utilisation (MFU), as Megatron and GPT-NeoX estimate them.

FLOPs per step = 24 * f * B * s * L * h^2 * (1 + s / (6 h) + V / (16 L h)) (Narayanan et al., 2021,
"Efficient Large-Scale Language Model Training on GPU Clusters"), with B the global batch, s the
sequence length, L layers, h the hidden size, V the padded vocabulary, and f = 3 (forward and
backward) or 4 with activation recomputation. It counts matrix multiplications of a multi-head,
4h-MLP model; for grouped-query attention or gated MLPs it is an estimate. MFU divides the
achieved FLOP/s per device by the device's peak.
"""

from __future__ import annotations

from neox_model import ModelConfig

# Dense bf16/fp16 tensor-core peaks in TFLOP/s, from the vendors' data sheets (SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10": 125.0, "V100": 125.0}


def flops_per_step(
    config: ModelConfig, global_batch: int, padded_vocab: int, recompute: bool
) -> float:
    h, layers, s = config.hidden_size, config.num_layers, config.seq_length
    factor = 4 if recompute else 3
    return (
        24
        * factor
        * global_batch
        * s
        * layers
        * h**2
        * (1 + s / (6 * h) + padded_vocab / (16 * layers * h))
    )


def peak_tflops(device_name: str | None, configured: float | None) -> float | None:
    """The configured peak, else the data-sheet peak of a known GPU, else None (no MFU)."""
    if configured:
        return configured
    for name, peak in PEAK_TFLOPS.items():
        if device_name and name in device_name:
            return peak
    return None
