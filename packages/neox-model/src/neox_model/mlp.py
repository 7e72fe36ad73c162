"""The transformer feed-forward block: h -> inner -> h, plain or gated.

Plain: act(x W1) W2. Gated (GLU variants, Shazeer 2020, "GLU Variants Improve Transformer"):
W1 projects to [up | gate] and the block computes (up * act(gate)) W2: geglu (GELU; geglu_tanh
its tanh approximation), reglu (ReLU),
swiglu (SiLU), glu (sigmoid), bilinear (no activation). That [up | gate] order is GPT-NeoX's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from neox_model.config import Activation, ModelConfig
from neox_model.tensor_parallel import ColumnParallelLinear, RowParallelLinear, TPGroup

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU (Hendrycks & Gimpel, 2016)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # its tanh approximation
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "softsign": F.softsign,
    "mish": F.mish,
    "geglu": F.gelu,
    "geglu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # Gemma
    "reglu": F.relu,
    "swiglu": F.silu,
    "glu": torch.sigmoid,
    "bilinear": lambda x: x,
}


def activation_function(name: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    return _ACTIVATIONS[name]


class MLP(nn.Module):
    def __init__(
        self, config: ModelConfig, tp: TPGroup, *, sequence_parallel: bool = False
    ) -> None:
        super().__init__()
        self.gated = config.gated
        self.act = activation_function(config.activation)
        inner, bias = config.ffn_size, config.use_bias_in_mlp
        self.dense_h_to_4h = ColumnParallelLinear(
            config.hidden_size,
            2 * inner if self.gated else inner,
            tp,
            bias=bias,
            chunks=2 if self.gated else 1,
            sequence_parallel=sequence_parallel,
        )
        self.dense_4h_to_h = RowParallelLinear(
            inner, config.hidden_size, tp, bias=bias, sequence_parallel=sequence_parallel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, seq, hidden) -> (batch, seq, hidden); under sequence parallelism both are
        this rank's (batch, seq / tp, hidden) part."""
        h = self.dense_h_to_4h(x)  # (batch, seq, inner or 2 * inner) on this rank's shard
        if self.gated:
            up, gate = h.chunk(2, dim=-1)
            h = up * self.act(gate)
        else:
            h = self.act(h)
        return self.dense_4h_to_h(h)
