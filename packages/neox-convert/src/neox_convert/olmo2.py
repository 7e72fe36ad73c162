"""Hugging Face `Olmo2ForCausalLM` <-> neox.

OLMo 2 (Team OLMo, 2024, "2 OLMo 2 Furious") is Llama's block (`llama`: gated MLP, grouped-query
attention, rotary scaled as `rope_parameters` says) with its two RMSNorms moved from the inputs
of attention and MLP to their outputs, x + norm(attn(x)) then x + norm(mlp(x)): neox's
`norm_placement` post, whose `attention_output_layernorm` and `mlp_output_layernorm` Hugging Face
calls `post_attention_layernorm` and `post_feedforward_layernorm` (neox's own
`post_attention_layernorm` is GPT-NeoX's norm before the MLP, which OLMo 2 lacks). After the
projections and before rotary, one RMSNorm normalises all query heads together and one all key
heads together (`self_attn.q_norm` / `k_norm`, weights of heads x head_dim in q_proj's and
k_proj's row order: neox's `use_qk_layernorm` with `qk_layernorm_per_head` false). Its MLP has
no biases; `attention_bias` is on q, k, v and o alike; it has no sliding window. Olmo2Config has
no `head_dim` key, but its attention reads one where config.json sets it (as Qwen 2's does).

Olmo2RMSNorm multiplies the weight by the float32 normalised input, then casts
((weight * x_normed).to(dtype)): neox's `rmsnorm_fp32_weight`, which imports set and exports
require (Llama's norm casts, then multiplies: the same in float32, rounded differently in bf16).
"""

from __future__ import annotations

from typing import Any

import torch

from neox_convert.key_map import KeyMap, StateDict, from_format, to_format
from neox_convert.llama import (
    ATTENTION_BIASES,
    NO_BIASES,
    bias_problems,
    common_hf_config,
    common_model_config,
    family_problems,
)
from neox_convert.llama import KEYS as LLAMA_KEYS
from neox_model import ModelConfig

KEYS = KeyMap(
    format="Hugging Face OLMo2",
    top=LLAMA_KEYS.top,
    layer={
        "attention.dense.weight": "self_attn.o_proj.weight",
        "attention.dense.bias": "self_attn.o_proj.bias",
        "attention.q_norm.weight": "self_attn.q_norm.weight",
        "attention.k_norm.weight": "self_attn.k_norm.weight",
        "attention_output_layernorm.weight": "post_attention_layernorm.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
        "mlp_output_layernorm.weight": "post_feedforward_layernorm.weight",
    },
    layer_prefix=LLAMA_KEYS.layer_prefix,
    qkv=LLAMA_KEYS.qkv,  # q_proj, k_proj, v_proj (and their biases with attention_bias)
    up_gate={"mlp.dense_h_to_4h.weight": ("mlp.up_proj.weight", "mlp.gate_proj.weight")},
    derived=LLAMA_KEYS.derived,
)


def export_problems(config: ModelConfig) -> list[str]:
    """Why OLMo2 cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(
        config, "OLMo2", qk_norm="all heads", placement="post", fp32_weight=True
    )
    problems += bias_problems(
        config,
        (NO_BIASES, ATTENTION_BIASES),
        "OLMo2's attention_bias is on q, k, v and o alike; its MLP has none",
    )
    if config.sliding_window_width is not None:
        problems.append("sliding_window_width (OLMo2 attends to the whole sequence)")
    return problems


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The Olmo2Config of `config`; `padded_vocab` is the exported embedding's row count.
    `pad_token_id` is not set: Olmo2Config's default (1) would make token 1's embedding row a
    padding row, which training in transformers never updates."""
    from transformers import Olmo2Config

    vocab = padded_vocab or config.padded_vocab_size
    return Olmo2Config(
        **common_hf_config(config, eod_id, vocab, head_dim_key=False),
        attention_bias=config.use_bias_in_attn_linear,
        pad_token_id=None,
        architectures=["Olmo2ForCausalLM"],
        dtype=dtype,
    )


def model_config(hf: Any) -> ModelConfig:
    """The neox architecture of an Olmo2Config (vocabulary not set)."""
    return common_model_config(
        hf,
        "OLMo2",
        norm_placement="post",
        use_qk_layernorm=True,
        qk_layernorm_per_head=False,
        rmsnorm_fp32_weight=True,
        use_bias_in_attn_linear=bool(hf.attention_bias),
        use_bias_in_mlp=False,
    )


def to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return to_format(state, config, KEYS)


def from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return from_format(theirs, config, KEYS)
