"""Causal self-attention (Vaswani et al., 2017) with grouped-query heads (Ainslie et al., 2023),
ALiBi or rotary positions, an optional sliding window (Beltagy et al., 2020; Mistral), optional
query/key norms (Dehghani et al., 2023; per head as Qwen 3, over all heads as OLMo 2) and a KV
cache, over tensor-parallel
projections. Heads are `head_dim` wide (`kv_channels`), which need not be hidden / heads.

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
from neox_model.norms import ShardedRMSNorm, build_norm
from neox_model.rotary import apply_rotary
from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TPGroup,
    sum_replicated_gradients,
)

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
        self.window = config.layer_window(layer_index)
        self.scale = (
            None if config.query_pre_attn_scalar is None else config.query_pre_attn_scalar**-0.5
        )
        self.softcap = config.attention_logit_softcapping
        self.dropout = config.attention_dropout
        self.flash = config.attention_types[layer_index] == "flash"
        self.rope_fusion = config.rope_fusion
        qkv_width = config.kv_heads * (self.q_per_kv + 2) * self.head_dim
        self.query_key_value = ColumnParallelLinear(
            config.hidden_size,
            qkv_width,
            tp,
            bias=config.qkv_bias,
            sequence_parallel=sequence_parallel,
        )
        self.dense = RowParallelLinear(
            config.attention_width,
            config.hidden_size,
            tp,
            bias=config.use_bias_in_attn_linear,
            sequence_parallel=sequence_parallel,
        )
        self.qk_per_head = config.qk_layernorm_per_head
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        if config.use_qk_layernorm and self.qk_per_head:
            self.q_norm = build_norm(config, self.head_dim)
            self.k_norm = build_norm(config, self.head_dim)
            if not sequence_parallel:
                # each rank normalises its own heads with the whole weight: partial gradients
                # (under sequence parallelism the model sums every replicated one's gradient)
                sum_replicated_gradients(self.q_norm, tp)
                sum_replicated_gradients(self.k_norm, tp)
        elif config.use_qk_layernorm:  # over all heads: each rank holds its heads' features
            eps = config.rms_norm_epsilon
            self.q_norm = ShardedRMSNorm(config.attention_width, eps, tp)
            self.k_norm = ShardedRMSNorm(config.kv_heads * self.head_dim, eps, tp)
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
        q = qkv[:, :, :, :-2].reshape(batch, seq, self.heads, -1)  # (b, s, h, d)
        k, v = qkv[:, :, :, -2], qkv[:, :, :, -1]  # (b, s, g, d)
        if self.q_norm is not None and self.k_norm is not None:
            if self.qk_per_head:
                q, k = self.q_norm(q), self.k_norm(k)
            else:  # over this rank's heads together, statistics summed over the ranks
                q = self.q_norm(q.flatten(2)).view_as(q)
                k = self.k_norm(k.flatten(2)).view_as(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, h or g, s, d)
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
        if self.softcap is not None:
            return self._softcapped(q, k, v, q_positions, dropout)
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
                scale=self.scale,
            )
        k_positions = torch.arange(k.shape[2], device=q_positions.device)
        mask = attention_mask(q_positions, k_positions, self.window, self.slopes).to(q.dtype)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa, scale=self.scale
        )

    def _softcapped(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_positions: torch.Tensor,
        dropout: float,
    ) -> torch.Tensor:
        """Attention with scores cap * tanh(score / cap) (Gemma 2), written out: SDPA cannot
        change the scores between the product and the softmax. Softmax in float32."""
        assert self.softcap is not None
        if self.q_per_kv > 1:  # each key/value group serves its q_per_kv query heads
            k = k.repeat_interleave(self.q_per_kv, dim=1)
            v = v.repeat_interleave(self.q_per_kv, dim=1)
        scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (b, h, q, k)
        scores = torch.tanh(scores / self.softcap) * self.softcap
        k_positions = torch.arange(k.shape[2], device=q_positions.device)
        scores = scores + attention_mask(q_positions, k_positions, self.window, self.slopes).to(
            scores.dtype
        )
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        return torch.matmul(probs, v)

    def _flash(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float
    ) -> torch.Tensor:
        from flash_attn import flash_attn_func  # optional GPU extra, checked at config time

        extra: dict[str, Any] = {}
        if self.softcap is not None:
            extra["softcap"] = self.softcap
        if self.scale is not None:
            extra["softmax_scale"] = self.scale
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
