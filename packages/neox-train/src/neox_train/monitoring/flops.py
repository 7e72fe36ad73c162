"""FLOPs of a training step, and how much of a device's peak they use (MFU, HFU).

Model FLOPs are what MFU counts, as the PaLM paper defines it (Chowdhery et al., 2022, appendix
B): per token 6 N for the weight matrix multiplications of forward and backward, N the
parameters that multiply activations (every block's, the final norm's and the output layer's;
the input embedding is a lookup), plus 12 L s h_q for the attention scores and their use
(L layers, s the sequence length, h_q the query width: heads x head dimension), counted whole,
as PaLM counts it, even though causal attention needs half. Recomputation is never counted. In a
mixture of experts N counts the active parameters: a token's top_k experts, the router (whose
matrix multiplies every token) and any shared expert.

Hardware FLOPs are what the devices compute: model FLOPs plus the forward passes that
activation checkpointing runs again (every block's forward: 2 N_blocks + 4 L s h_q per token).
HFU = hardware FLOP/s over the peak; MFU = model FLOP/s over the peak; HFU / MFU is exactly
`StepFlops.recompute_factor`.
"""

from __future__ import annotations

from dataclasses import dataclass

from neox_model import ModelConfig
from neox_model.parameters import block_parameters, norm_parameters

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s per device, from the vendors' data
# sheets, looked up by the device name torch reports; the first name found in it wins, so the
# PCIe and NVL parts come before their SXM namesakes.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),  # Grace Hopper: an H100 SXM
    ("H200 NVL", 835.0),
    ("H200", 989.0),  # SXM
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),  # 40 and 80 GB, SXM and PCIe alike
    ("A800", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
    ("V100", 125.0),  # fp16
)


@dataclass(frozen=True)
class StepFlops:
    model: float  # model FLOPs of one optimizer step, all devices together
    hardware: float  # model FLOPs plus the recomputed forward passes

    @property
    def recompute_factor(self) -> float:
        return self.hardware / self.model


def step_flops(
    config: ModelConfig, global_batch: int, padded_vocab: int, recompute: bool
) -> StepFlops:
    """The model and hardware FLOPs of one optimizer step of `global_batch` sequences."""
    tokens = global_batch * config.seq_length
    layers, h = config.num_layers, config.hidden_size
    # a mixture of experts: the parameters a token passes through (its top_k experts, the
    # router and any shared expert), not all the experts
    blocks = sum(block_parameters(config, i, active=True) for i in range(layers))
    matmul_parameters = blocks + norm_parameters(config) + padded_vocab * h  # + final norm
    attention = layers * config.seq_length * config.num_attention_heads * config.head_dim
    model = tokens * (6 * matmul_parameters + 12 * attention)
    recomputed = tokens * (2 * blocks + 4 * attention) if recompute else 0
    return StepFlops(float(model), float(model + recomputed))


def peak_tflops(
    device_name: str | None, configured: float | None, dtype: str = "bf16"
) -> float | None:
    """The configured peak, else the data-sheet bf16/fp16 peak of a known GPU, else None (no
    MFU): a GPU not in the table, a CPU, or an fp32 run (whose peak is not the table's)."""
    if configured:
        return configured
    if not device_name or dtype == "fp32":
        return None
    for name, peak in PEAK_TFLOPS:
        if name in device_name:
            return peak
    return None


def no_peak_reason(device_name: str | None, dtype: str) -> str | None:
    """Why a GPU run reports no MFU, in one line (None on CPU, which has no MFU to report)."""
    if not device_name:
        return None
    if dtype == "fp32":
        return (
            f"no MFU: {device_name} in fp32 has no tensor-core peak in neox's table; "
            "set peak_tflops to its fp32 peak to report one"
        )
    return (
        f"no MFU: the peak FLOP/s of {device_name!r} is not known to neox; set peak_tflops "
        "(dense bf16/fp16 TFLOP/s of one device) to report it"
    )
