"""Hugging Face `GPTNeoXForCausalLM` <-> neox.

neox's module names are Hugging Face GPTNeoX's without the `gpt_neox.` prefix and its fused QKV
is GPTNeoX's per-head (heads, 3, head_dim) layout, so the map is a rename, written out literally
so that every tensor's destination can be read here.
"""

from __future__ import annotations

from typing import Any

import torch

from neox_convert.errors import ConversionError, ExportError
from neox_convert.gemma_features import gemma_problems
from neox_convert.key_map import KeyMap, StateDict, from_format, to_format
from neox_convert.rope import (
    rope_base,
    rope_parameters,
    rope_problems,
    rope_scaling,
    rotary_fraction,
    scaling_problems,
)
from neox_model import ModelConfig

KEYS = KeyMap(
    format="Hugging Face GPTNeoX",
    top={
        "embed_in.weight": "gpt_neox.embed_in.weight",
        "final_layer_norm.weight": "gpt_neox.final_layer_norm.weight",
        "final_layer_norm.bias": "gpt_neox.final_layer_norm.bias",
        "embed_out.weight": "embed_out.weight",  # absent when the output is tied to embed_in
    },
    layer={
        "input_layernorm.weight": "input_layernorm.weight",
        "input_layernorm.bias": "input_layernorm.bias",
        "attention.query_key_value.weight": "attention.query_key_value.weight",
        "attention.query_key_value.bias": "attention.query_key_value.bias",
        "attention.dense.weight": "attention.dense.weight",
        "attention.dense.bias": "attention.dense.bias",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
        "post_attention_layernorm.bias": "post_attention_layernorm.bias",
        "mlp.dense_h_to_4h.weight": "mlp.dense_h_to_4h.weight",
        "mlp.dense_h_to_4h.bias": "mlp.dense_h_to_4h.bias",
        "mlp.dense_4h_to_h.weight": "mlp.dense_4h_to_h.weight",
        "mlp.dense_4h_to_h.bias": "mlp.dense_4h_to_h.bias",
    },
    layer_prefix="gpt_neox.layers.{}.",
    # buffers older transformers versions saved: the causal mask and rotary frequencies
    derived=("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"),
    aliases={"lm_head.weight": "embed_out.weight"},  # transformers 5's module name for it
)

# neox activation -> Hugging Face's name for the same function (exact GELU is "gelu")
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "mish": "mish"}
NEOX_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "mish": "mish"}


def export_problems(config: ModelConfig) -> list[str]:
    """Why GPTNeoX cannot reproduce `config` exactly; empty when it can."""
    problems = []
    if config.pos_emb != "rotary":
        problems.append(f"pos_emb {config.pos_emb!r} (GPTNeoX uses rotary positions)")
    if config.moe:
        problems.append(f"moe_num_experts {config.moe_num_experts} (GPTNeoX's MLPs are dense)")
    problems += scaling_problems(config)
    if config.attention_width != config.hidden_size:
        problems.append(
            f"kv_channels {config.kv_channels} (GPTNeoX's heads are hidden_size / "
            "num_attention_heads wide)"
        )
    if config.qkv_bias != config.use_bias_in_attn_linear:
        problems.append(
            f"use_bias_in_qkv {config.qkv_bias} with use_bias_in_attn_linear "
            f"{config.use_bias_in_attn_linear} (GPTNeoX's attention_bias is on QKV and dense)"
        )
    if config.use_qk_layernorm:
        problems.append("use_qk_layernorm (GPTNeoX has no query/key norms)")
    if config.norm != "layernorm" or not config.use_bias_in_norms:
        problems.append(f"norm {config.norm!r} without the LayerNorm bias GPTNeoX has")
    if config.norm_placement != "pre":
        problems.append(
            f"norm_placement {config.norm_placement!r} (GPTNeoX normalises the inputs of "
            "attention and MLP)"
        )
    if config.activation not in HF_ACTIVATIONS:
        problems.append(f"activation {config.activation!r} (GPTNeoX's MLP is not gated)")
    if config.kv_heads != config.num_attention_heads:
        problems.append(
            f"num_kv_heads {config.num_kv_heads} (GPTNeoX has no grouped-query attention)"
        )
    if not config.use_bias_in_mlp:
        problems.append("use_bias_in_mlp false (GPTNeoX's MLP has biases)")
    if config.gpt_j_tied:
        problems.append("gpt_j_tied (GPTNeoX has two norms per block)")
    if config.sliding_window_width is not None:
        problems.append("sliding_window_width (GPTNeoX attends to the whole sequence)")
    return problems + gemma_problems(config, "GPTNeoX")


def check_exportable(config: ModelConfig) -> None:
    """Refuse configs that GPTNeoX cannot reproduce exactly (never export approximately)."""
    problems = export_problems(config)
    if problems:
        raise ExportError("no exact Hugging Face GPTNeoX equivalent for " + "; ".join(problems))


def to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return to_format(state, config, KEYS)


def to_hf_state_dict(state: StateDict, dtype: torch.dtype) -> StateDict:
    """Rename every tensor (an unknown one is an error) and cast it to `dtype`."""
    renamed = to_format(state, None, KEYS)  # a rename: no config needed
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in renamed.items()}


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The GPTNeoXConfig of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=padded_vocab or config.padded_vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.ffn_size,
        hidden_act=HF_ACTIVATIONS[config.activation],
        rope_parameters=rope_parameters(config, fraction=True),
        max_position_embeddings=config.max_positions,
        layer_norm_eps=config.layernorm_epsilon,
        use_parallel_residual=config.gpt_j_residual,
        tie_word_embeddings=not config.no_weight_tying,
        attention_bias=config.use_bias_in_attn_linear,
        hidden_dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
        initializer_range=config.init_method_std,
        bos_token_id=eod_id,
        eos_token_id=eod_id,
        architectures=["GPTNeoXForCausalLM"],
        dtype=dtype,
    )


def import_problems(hf: Any) -> list[str]:
    """Why neox-model cannot reproduce the GPTNeoX model `hf` describes; empty when it can."""
    problems = rope_problems(hf)
    if hf.hidden_act not in NEOX_ACTIVATIONS:
        problems.append(f"hidden_act {hf.hidden_act!r} (neox-model has {sorted(NEOX_ACTIVATIONS)})")
    return problems


def model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a GPTNeoXConfig (vocabulary not set)."""
    problems = import_problems(hf)
    if problems:
        raise ConversionError(
            "neox-model cannot reproduce this GPTNeoX model: " + "; ".join(problems)
        )
    return ModelConfig(
        num_layers=hf.num_hidden_layers,
        hidden_size=hf.hidden_size,
        num_attention_heads=hf.num_attention_heads,
        seq_length=hf.max_position_embeddings,
        max_position_embeddings=hf.max_position_embeddings,
        intermediate_size=hf.intermediate_size,
        pos_emb="rotary",
        rotary_pct=rotary_fraction(hf),
        rotary_emb_base=rope_base(hf),
        rope_scaling=rope_scaling(hf),
        gpt_j_residual=hf.use_parallel_residual,
        norm="layernorm",
        layernorm_epsilon=hf.layer_norm_eps,
        use_bias_in_attn_linear=hf.attention_bias,
        activation=NEOX_ACTIVATIONS[hf.hidden_act],  # type: ignore[arg-type]
        no_weight_tying=not hf.tie_word_embeddings,
        hidden_dropout=float(hf.hidden_dropout),
        attention_dropout=float(hf.attention_dropout),
        init_method_std=hf.initializer_range,
    )


def from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return from_format(theirs, config, KEYS)
