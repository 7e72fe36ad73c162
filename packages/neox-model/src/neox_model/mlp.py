"""The transformer feed-forward block: h -> ffn -> h with a GELU (Hendrycks & Gimpel, 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox_model.config import ModelConfig


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.ffn_size)
        self.dense_4h_to_h = nn.Linear(config.ffn_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # exact (erf) GELU
