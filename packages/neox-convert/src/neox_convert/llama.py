"""Hugging Face `LlamaForCausalLM` <-> neox.

Llama keeps q/k/v and gate/up as separate projections, which neox fuses (see `fused`); its rotary
is the same rotate-half layout as neox's, so no rows are permuted. Block: RMSNorm without bias,
sequential residual, gated MLP down(act(gate(x)) * up(x)), optional biases (`attention_bias` on
q/k/v/o, `mlp_bias`), grouped-query attention. Mistral's files use the same names (`mistral`).
"""

from __future__ import annotations

from typing import Any

import torch

from neox_convert.errors import ConversionError
from neox_convert.key_map import KeyMap, StateDict, from_format, to_format
from neox_convert.mlp_size import with_ffn_size
from neox_convert.rope import rope_base, rope_parameters, rope_problems, rotary_fraction
from neox_model import ModelConfig

KEYS = KeyMap(
    format="Hugging Face Llama",
    top={
        "embed_in.weight": "model.embed_tokens.weight",
        "final_layer_norm.weight": "model.norm.weight",
        "embed_out.weight": "lm_head.weight",  # absent when the output is tied to embed_in
    },
    layer={
        "input_layernorm.weight": "input_layernorm.weight",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
        "attention.dense.weight": "self_attn.o_proj.weight",
        "attention.dense.bias": "self_attn.o_proj.bias",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
        "mlp.dense_4h_to_h.bias": "mlp.down_proj.bias",
    },
    layer_prefix="model.layers.{}.",
    qkv={
        "attention.query_key_value.weight": (
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ),
        "attention.query_key_value.bias": (
            "self_attn.q_proj.bias",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.bias",
        ),
    },
    up_gate={
        "mlp.dense_h_to_4h.weight": ("mlp.up_proj.weight", "mlp.gate_proj.weight"),
        "mlp.dense_h_to_4h.bias": ("mlp.up_proj.bias", "mlp.gate_proj.bias"),
    },
    derived=("rotary_emb.inv_freq",),  # saved by older transformers versions
)

# neox gated activation -> the Hugging Face activation applied to the gate (exact GELU is "gelu")
HF_ACTIVATIONS = {
    "swiglu": "silu",
    "geglu": "gelu",
    "reglu": "relu",
    "glu": "sigmoid",
    "bilinear": "linear",
}
NEOX_ACTIVATIONS = {hf: neox for neox, hf in HF_ACTIVATIONS.items()} | {"swish": "swiglu"}


def family_problems(config: ModelConfig, family: str) -> list[str]:
    """Why `family` (Llama or Mistral) cannot reproduce `config` exactly; empty when it can."""
    problems = []
    if config.pos_emb != "rotary":
        problems.append(f"pos_emb {config.pos_emb!r} ({family} uses rotary positions)")
    elif config.rotary_pct != 1.0:
        problems.append(f"rotary_pct {config.rotary_pct} ({family} rotates whole heads)")
    if config.norm != "rmsnorm" or config.use_bias_in_norms:
        problems.append(
            f"norm {config.norm!r} with bias {config.use_bias_in_norms} "
            f"({family} has RMSNorm without bias)"
        )
    if config.activation not in HF_ACTIVATIONS:
        problems.append(f"activation {config.activation!r} ({family}'s MLP is gated)")
    if config.gpt_j_residual:
        problems.append(f"gpt_j_residual ({family}'s blocks are sequential)")
    return problems


def export_problems(config: ModelConfig) -> list[str]:
    """Why Llama cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Llama")
    if config.sliding_window_width is not None:
        problems.append("sliding_window_width (Llama attends to the whole sequence; use mistral)")
    return problems


def common_hf_config(config: ModelConfig, eod_id: int | None, vocab: int) -> dict[str, Any]:
    """The config.json values Llama and Mistral share."""
    return dict(
        vocab_size=vocab,
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        hidden_act=HF_ACTIVATIONS[config.activation],
        max_position_embeddings=config.max_positions,
        initializer_range=config.init_method_std,
        rms_norm_eps=config.rms_norm_epsilon,
        tie_word_embeddings=not config.no_weight_tying,
        rope_parameters=rope_parameters(config.rotary_emb_base),
        attention_dropout=config.attention_dropout,
        bos_token_id=eod_id,
        eos_token_id=eod_id,
    )


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The LlamaConfig of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import LlamaConfig

    return LlamaConfig(
        **common_hf_config(config, eod_id, padded_vocab or config.padded_vocab_size),
        attention_bias=config.use_bias_in_attn_linear,
        mlp_bias=config.use_bias_in_mlp,
        architectures=["LlamaForCausalLM"],
        dtype=dtype,
    )


def import_problems(hf: Any) -> list[str]:
    """Why neox-model cannot reproduce the Llama-family model `hf` describes (also Mistral)."""
    problems = rope_problems(hf)
    if rotary_fraction(hf) != 1.0:
        problems.append(f"partial_rotary_factor {rotary_fraction(hf)} (Llama rotates whole heads)")
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if head_dim * hf.num_attention_heads != hf.hidden_size:
        problems.append(
            f"head_dim {head_dim} (neox-model's heads are hidden_size / num_attention_heads = "
            f"{hf.hidden_size / hf.num_attention_heads:g} wide)"
        )
    if hf.hidden_act not in NEOX_ACTIVATIONS:
        problems.append(
            f"hidden_act {hf.hidden_act!r} (neox-model gates with {sorted(NEOX_ACTIVATIONS)})"
        )
    return problems


def common_model_config(hf: Any, family: str, **extra: Any) -> ModelConfig:
    """The neox architecture of a Llama or Mistral config (vocabulary not set)."""
    problems = import_problems(hf)
    if problems:
        raise ConversionError(
            f"neox-model cannot reproduce this {family} model: " + "; ".join(problems)
        )
    kv_heads = hf.num_key_value_heads or hf.num_attention_heads
    config = ModelConfig(
        num_layers=hf.num_hidden_layers,
        hidden_size=hf.hidden_size,
        num_attention_heads=hf.num_attention_heads,
        num_kv_heads=None if kv_heads == hf.num_attention_heads else kv_heads,
        seq_length=hf.max_position_embeddings,
        max_position_embeddings=hf.max_position_embeddings,
        pos_emb="rotary",
        rotary_emb_base=rope_base(hf),
        norm="rmsnorm",
        rms_norm_epsilon=hf.rms_norm_eps,
        use_bias_in_norms=False,
        activation=NEOX_ACTIVATIONS[hf.hidden_act],  # type: ignore[arg-type]
        no_weight_tying=not hf.tie_word_embeddings,
        hidden_dropout=0.0,
        attention_dropout=float(hf.attention_dropout),
        init_method_std=hf.initializer_range,
        **extra,
    )
    return with_ffn_size(config, hf.intermediate_size)


def model_config(hf: Any) -> ModelConfig:
    return common_model_config(
        hf,
        "Llama",
        use_bias_in_attn_linear=bool(hf.attention_bias),
        use_bias_in_mlp=bool(getattr(hf, "mlp_bias", False)),
    )


def to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return to_format(state, config, KEYS)


def from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return from_format(theirs, config, KEYS)
