"""Export a neox checkpoint to a Hugging Face `GPTNeoXForCausalLM` directory.

neox's module names are Hugging Face GPTNeoX's without the `gpt_neox.` prefix; the key map
below is written out literally so that every tensor's destination can be read here.
"""

from __future__ import annotations

from typing import Any

import torch

from neox_model import ModelConfig

# per block: neox name -> Hugging Face name (under gpt_neox.layers.{i}.)
LAYER_KEYS: dict[str, str] = {
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
}
TOP_KEYS: dict[str, str] = {
    "embed_in.weight": "gpt_neox.embed_in.weight",
    "final_layer_norm.weight": "gpt_neox.final_layer_norm.weight",
    "final_layer_norm.bias": "gpt_neox.final_layer_norm.bias",
    "embed_out.weight": "embed_out.weight",  # absent when the output is tied to embed_in
}


class ExportError(ValueError):
    """The checkpoint cannot be expressed exactly in the target format."""


HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}


def export_problems(config: ModelConfig) -> list[str]:
    """Why GPTNeoX cannot reproduce `config` exactly; empty when it can."""
    problems = []
    if config.pos_emb != "rotary":
        problems.append(f"pos_emb {config.pos_emb!r} (GPTNeoX uses rotary positions)")
    if config.norm != "layernorm" or not config.use_bias_in_norms:
        problems.append(f"norm {config.norm!r} without the LayerNorm bias GPTNeoX has")
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
    return problems


def check_exportable(config: ModelConfig) -> None:
    """Refuse configs that GPTNeoX cannot reproduce exactly (never export approximately)."""
    problems = export_problems(config)
    if problems:
        raise ExportError("no exact Hugging Face GPTNeoX equivalent for " + "; ".join(problems))


def hf_key(key: str) -> str:
    if key in TOP_KEYS:
        return TOP_KEYS[key]
    prefix, _, rest = key.partition(".")
    index, _, name = rest.partition(".")
    if prefix != "layers" or not index.isdigit() or name not in LAYER_KEYS:
        raise ExportError(f"no Hugging Face GPTNeoX name for tensor {key!r}")
    return f"gpt_neox.layers.{index}.{LAYER_KEYS[name]}"


DERIVED = ("rotary.inv_freq",)  # buffers recomputed from the config, never exported


def to_hf_state_dict(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Rename every tensor (an unknown one is an error) and cast it to `dtype`."""
    return {
        hf_key(k): v.detach().to(dtype).contiguous().clone()
        for k, v in state.items()
        if k not in DERIVED
    }


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The GPTNeoXConfig of `config`; `padded_vocab` is the saved embedding's row count."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=padded_vocab or config.padded_vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.ffn_size,
        hidden_act=HF_ACTIVATIONS[config.activation],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(config.rotary_emb_base),
            "partial_rotary_factor": config.rotary_pct,
        },
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
