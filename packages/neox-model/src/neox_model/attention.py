"""Causal self-attention (Vaswani et al., 2017) with grouped-query heads (Ainslie et al., 2023),
ALiBi or rotary positions, an optional sliding window (Beltagy et al., 2020; Mistral) and a KV
cache, over tensor-parallel projections.

QKV layout: `query_key_value` projects to (kv_heads, q_per_kv + 2, head_dim) per position: each
key/value group holds its query heads, then its key, then its value. With as many kv heads as
query heads this is GPT-NeoX's per-head (heads, 3, head_dim) layout, and a tensor-parallel rank
holds whole groups. The attention itself is `scaled_dot_product_attention` (or flash-attn where
`attention_config` asks for it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neox_model.alibi import alibi_bias, alibi_slopes
from neox_model.config import ModelConfig
from neox_model.kv_cache import KVCache
from neox_model.rotary import apply_rotary
from neox_model.tensor_parallel import ColumnParallelLinear, RowParallelLinear, TPGroup

Rope = tuple[torch.Tensor, torch.Tensor] | None


def attention_mask(
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    window: int | None,
    slopes: torch.Tensor | None,
) -> torch.Tensor:
    """Additive mask (heads or 1, q, k): 0 where a query may attend, -inf elsewhere, + ALiBi."""
    offset = q_positions[:, None] - k_positions[None, :]  # (q, k): how far back the key is
    allowed = offset >= 0
    if window is not None:
        allowed &= offset <= window
    mask = torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, float("-inf"))
    if slopes is None:
        return mask[None]
    return mask[None] + alibi_bias(slopes, q_positions, k_positions)


class SelfAttention(nn.Module):
    slopes: torch.Tensor | None

    def __init__(
        self,
        config: ModelConfig,
        tp: TPGroup,
        layer_index: int,
        *,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.head_dim = config.head_dim
        self.q_per_kv = config.num_attention_heads // config.kv_heads
        self.groups = tp.divide(config.kv_heads, "num_kv_heads")  # this rank's kv groups
        self.heads = self.groups * self.q_per_kv  # this rank's query heads
        self.window = config.sliding_window_width
        self.dropout = config.attention_dropout
        self.flash = config.attention_types[layer_index] == "flash"
        self.rope_fusion = config.rope_fusion
        bias = config.use_bias_in_attn_linear
        qkv_width = config.kv_heads * (self.q_per_kv + 2) * self.head_dim
        self.query_key_value = ColumnParallelLinear(
            config.hidden_size, qkv_width, tp, bias=bias, sequence_parallel=sequence_parallel
        )
        self.dense = RowParallelLinear(
            config.hidden_size,
            config.hidden_size,
            tp,
            bias=bias,
            sequence_parallel=sequence_parallel,
        )
        self.alibi_heads = (
            (config.num_attention_heads, tp.rank) if config.pos_emb == "alibi" else None
        )
        self.register_buffer("slopes", self._slopes(), persistent=False)

    def _slopes(self) -> torch.Tensor | None:
        """This rank's ALiBi slopes, or None without ALiBi."""
        if self.alibi_heads is None:
            return None
        heads, rank = self.alibi_heads
        return alibi_slopes(heads)[rank * self.heads :][: self.heads]

    def reset_buffers(self) -> None:
        """Recompute the ALiBi slopes (after `to_empty` from the meta device)."""
        slopes = self._slopes()
        if self.slopes is not None and slopes is not None:
            self.slopes.copy_(slopes)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        positions: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (batch, seq, hidden) at `positions` (seq,) -> (batch, seq, hidden). Under sequence
        parallelism x and the output are this rank's (batch, seq / tp, hidden) part; the
        attention itself sees the whole sequence, at the whole sequence's `positions`."""
        qkv = self.query_key_value(x)  # (batch, seq, qkv / tp): the whole sequence
        batch, seq = qkv.shape[:2]
        qkv = qkv.view(batch, seq, self.groups, self.q_per_kv + 2, -1)
        q = qkv[:, :, :, :-2].reshape(batch, seq, self.heads, -1).transpose(1, 2)  # (b, h, s, d)
        k, v = qkv[:, :, :, -2].transpose(1, 2), qkv[:, :, :, -1].transpose(1, 2)  # (b, g, s, d)
        if rope is not None:
            q = apply_rotary(q, *rope, fused=self.rope_fusion)
            k = apply_rotary(k, *rope, fused=self.rope_fusion)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v, positions)  # keys from position 0
        written = cache is None or not cache.static  # or a static cache's unwritten tail follows
        out = self._attend(q, k, v, positions, written)  # (b, h, s, d)
        return self.dense(out.transpose(1, 2).reshape(batch, seq, -1))  # (b, s or s / tp, hidden)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_positions: torch.Tensor,
        written: bool = True,
    ) -> torch.Tensor:
        """q at `q_positions` attends to k, v at positions 0, 1, ... (the cache's or the whole
        sequence's); `written` False: the keys after the queries are not written yet."""
        dropout = self.dropout if self.training else 0.0
        if self.flash:
            return self._flash(q, k, v, dropout)
        plain = self.window is None and self.slopes is None
        # plain bools, also when torch.compile leaves the shapes symbolic (SDPA takes no SymBool)
        square = bool(q.shape[2] == k.shape[2])
        gqa = self.q_per_kv > 1
        if plain and (square or (q.shape[2] == 1 and written)):
            # causal over the whole sequence, or one new token that sees every cached key
            return F.scaled_dot_product_attention(
                q,
                k,
                v,
                dropout_p=dropout,
                is_causal=square and bool(q.shape[2] > 1),
                enable_gqa=gqa,
            )
        k_positions = torch.arange(k.shape[2], device=q_positions.device)
        mask = attention_mask(q_positions, k_positions, self.window, self.slopes).to(q.dtype)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa
        )

    def _flash(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float
    ) -> torch.Tensor:
        from flash_attn import flash_attn_func  # optional GPU extra, checked at config time

        extra: dict[str, Any] = {}
        if self.window is not None:
            extra["window_size"] = (self.window, 0)
        if self.slopes is not None:
            extra["alibi_slopes"] = self.slopes.float()
        out = flash_attn_func(  # (b, s, h, d) layout; bottom-right aligned causal mask
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=dropout,
            causal=True,
            **extra,
        )
        return out.transpose(1, 2)
