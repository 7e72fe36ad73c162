"""neox's fused projections, and the separate matrices other formats keep instead.

Attention: `query_key_value` stacks, per key/value group, the group's query heads, then its key
head, then its value head, each `head_dim` rows: (kv_heads, q_per_kv + 2, head_dim, ...). With as
many kv heads as query heads that is GPT-NeoX's per-head (heads, 3, head_dim) layout. Query head h
belongs to group h // q_per_kv, which is how Hugging Face's `repeat_kv` pairs them too.

Gated MLP: `dense_h_to_4h` is [up | gate] along its rows (output = up * act(gate)).

Every function works on a weight (rows, in_features) or a bias (rows,) alike.
"""

from __future__ import annotations

import torch

from neox_model import ModelConfig


def _grouped(fused: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(kv_heads * (q_per_kv + 2) * head_dim, ...) -> (kv_heads, q_per_kv + 2, head_dim, ...)."""
    q_per_kv = config.num_attention_heads // config.kv_heads
    expected = config.kv_heads * (q_per_kv + 2) * config.head_dim
    if fused.shape[0] != expected:
        raise ValueError(
            f"query_key_value has {fused.shape[0]} rows; {config.num_attention_heads} heads, "
            f"{config.kv_heads} kv heads of size {config.head_dim} need {expected}"
        )
    return fused.reshape(config.kv_heads, q_per_kv + 2, config.head_dim, *fused.shape[1:])


def split_qkv(
    fused: torch.Tensor, config: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """neox's fused QKV -> (q (heads * head_dim, ...), k, v (kv_heads * head_dim, ...))."""
    grouped = _grouped(fused, config)
    rest = fused.shape[1:]
    q = grouped[:, :-2].reshape(-1, *rest)
    k = grouped[:, -2].reshape(-1, *rest)
    v = grouped[:, -1].reshape(-1, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def fuse_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: ModelConfig
) -> torch.Tensor:
    """Separate q, k, v projections -> neox's fused QKV (the inverse of `split_qkv`)."""
    groups, head_dim = config.kv_heads, config.head_dim
    q_per_kv = config.num_attention_heads // groups
    expected = (groups * q_per_kv * head_dim, groups * head_dim, groups * head_dim)
    if (q.shape[0], k.shape[0], v.shape[0]) != expected:
        raise ValueError(
            f"q, k, v have {q.shape[0]}, {k.shape[0]}, {v.shape[0]} rows; "
            f"{config.num_attention_heads} heads, {groups} kv heads of size {head_dim} "
            f"need {expected[0]}, {expected[1]}, {expected[2]}"
        )
    rest = q.shape[1:]
    stacked = torch.cat(
        [
            q.reshape(groups, q_per_kv, head_dim, *rest),
            k.reshape(groups, 1, head_dim, *rest),
            v.reshape(groups, 1, head_dim, *rest),
        ],
        dim=1,
    )  # (groups, q_per_kv + 2, head_dim, ...)
    return stacked.reshape(-1, *rest).contiguous()


def split_up_gate(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A gated MLP's [up | gate] -> (up, gate)."""
    up, gate = fused.chunk(2, dim=0)
    return up.contiguous(), gate.contiguous()


def fuse_up_gate(up: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """(up, gate) -> a gated MLP's [up | gate]."""
    if up.shape != gate.shape:
        raise ValueError(f"up {tuple(up.shape)} and gate {tuple(gate.shape)} differ in shape")
    return torch.cat([up, gate], dim=0)
