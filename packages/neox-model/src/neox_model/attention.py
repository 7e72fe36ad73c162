"""Causal multi-head self-attention (Vaswani et al., 2017) with GPT-NeoX's fused QKV layout.

`query_key_value` projects to (heads, 3, head_dim) per position, interleaved per head as
GPT-NeoX stores it, so checkpoints map onto GPT-NeoX and Hugging Face GPTNeoX by name only.
The attention itself is `torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neox_model.config import ModelConfig
from neox_model.rotary import apply_rotary


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        batch, seq, hidden = x.shape
        qkv = self.query_key_value(x).view(batch, seq, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each (b, heads, s, hd)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        out = out.transpose(1, 2).reshape(batch, seq, hidden)  # (b, s, hidden)
        return self.dense(out)
