"""Hugging Face `LlamaForCausalLM` <-> neox.

Llama keeps q/k/v and gate/up as separate projections, which neox fuses (see `fused`); its rotary
is the same rotate-half layout as neox's, so no rows are permuted. Block: RMSNorm without bias,
sequential residual, gated MLP down(act(gate(x)) * up(x)), optional biases (`attention_bias` on
q/k/v/o, `mlp_bias`), grouped-query attention with heads `head_dim` wide (neox's `kv_channels`
where that is not hidden / heads), rotary scaled as `rope_parameters` says (Llama 3.1's llama3,
linear, yarn: see `rope`). Mistral's and Qwen's files use the same names (`mistral`, `qwen`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from neox_convert.errors import ConversionError
from neox_convert.gemma_features import gemma_problems
from neox_convert.key_map import KeyMap, StateDict, from_format, to_format
from neox_convert.mlp_size import with_ffn_size
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

# neox gated activation -> the Hugging Face activation applied to the gate (exact GELU is "gelu";
# "gelu_pytorch_tanh" is torch's tanh approximation, Gemma's)
HF_ACTIVATIONS = {
    "swiglu": "silu",
    "geglu": "gelu",
    "geglu_tanh": "gelu_pytorch_tanh",
    "reglu": "relu",
    "glu": "sigmoid",
    "bilinear": "linear",
}
NEOX_ACTIVATIONS = {hf: neox for neox, hf in HF_ACTIVATIONS.items()} | {"swish": "swiglu"}

# the query/key norms of a family: none, an RMSNorm of each head (Qwen 3), one over all query
# heads together and one over all key heads (OLMo 2)
QKNorm = Literal["per head", "all heads"] | None
QK_NORMS: dict[str, str] = {
    "per head": "each query and key head",
    "all heads": "all query heads together and all key heads together",
}
# where a family's block norms are, by neox's norm_placement
PLACEMENTS: dict[str, str] = {
    "pre": "the inputs of attention and MLP",
    "post": "the outputs of attention and MLP",
    "sandwich": "the inputs and outputs of attention and MLP",
}


Biases = tuple[bool, bool, bool]  # on QKV, on the attention output, on the MLP
NO_BIASES: Biases = (False, False, False)
ATTENTION_BIASES: Biases = (True, True, False)  # one attention_bias for q, k, v and o


def bias_problems(config: ModelConfig, layouts: tuple[Biases, ...], reason: str) -> list[str]:
    """A problem when the model's (QKV, attention output, MLP) biases are none of `layouts`,
    those a family's config can express; `reason` says which those are."""
    qkv, dense, mlp = config.qkv_bias, config.use_bias_in_attn_linear, config.use_bias_in_mlp
    if (qkv, dense, mlp) in layouts:
        return []
    return [
        f"use_bias_in_qkv {qkv}, use_bias_in_attn_linear {dense}, use_bias_in_mlp {mlp} ({reason})"
    ]


def family_problems(
    config: ModelConfig,
    family: str,
    qk_norm: QKNorm = None,
    placement: str = "pre",
    gemma: bool = False,
    fp32_weight: bool = False,
    moe: bool = False,
) -> list[str]:
    """Why `family` (Llama, Mistral, Qwen2, Qwen3, OLMo2 or Gemma2: with the query/key norms
    `qk_norm`, norms on the inputs or outputs of attention and MLP as `placement` says, Gemma 2's
    features where `gemma`, RMSNorms scaling by the weight in float32 before rounding where
    `fp32_weight`, mixtures of experts where `moe`: their details are
    `moe_families.moe_problems`) cannot reproduce `config` exactly, its biases and windows
    aside; empty when it can."""
    problems = []
    if config.pos_emb != "rotary":
        problems.append(f"pos_emb {config.pos_emb!r} ({family} uses rotary positions)")
    elif config.rotary_pct != 1.0:
        problems.append(f"rotary_pct {config.rotary_pct} ({family} rotates whole heads)")
    problems += scaling_problems(config)
    if config.norm != "rmsnorm" or config.use_bias_in_norms:
        problems.append(
            f"norm {config.norm!r} with bias {config.use_bias_in_norms} "
            f"({family} has RMSNorm without bias)"
        )
    if config.norm_placement != placement:
        where = PLACEMENTS[placement]
        problems.append(f"norm_placement {config.norm_placement!r} ({family} normalises {where})")
    problems += qk_norm_problems(config, family, qk_norm)
    if not gemma and config.rmsnorm_fp32_weight != fp32_weight:  # Gemma's is float32 anyway
        problems.append(
            f"rmsnorm_fp32_weight {config.rmsnorm_fp32_weight} ({family}'s RMSNorm "
            + (
                "scales by its weight in float32, then rounds"
                if fp32_weight
                else "rounds, then scales by its weight"
            )
            + ")"
        )
    if config.activation not in HF_ACTIVATIONS:
        problems.append(f"activation {config.activation!r} ({family}'s MLP is gated)")
    if config.moe and not moe:
        problems.append(f"moe_num_experts {config.moe_num_experts} ({family}'s MLPs are dense)")
    if config.gpt_j_residual:
        problems.append(f"gpt_j_residual ({family}'s blocks are sequential)")
    if not gemma:
        problems += gemma_problems(config, family)
    return problems


def qk_norm_of(config: ModelConfig) -> QKNorm:
    """The query/key norms `config` has: none, one per head (Qwen 3) or one over all heads
    (OLMo 2)."""
    if not config.use_qk_layernorm:
        return None
    return "per head" if config.qk_layernorm_per_head else "all heads"


def qk_norm_problems(config: ModelConfig, family: str, qk_norm: QKNorm) -> list[str]:
    """Why `family`, whose query/key norms are `qk_norm`, cannot reproduce `config`'s."""
    ours = qk_norm_of(config)
    if ours == qk_norm:
        return []
    if qk_norm is None:
        keys = "use_qk_layernorm True"
        if ours == "all heads":
            keys += ", qk_layernorm_per_head False"
        return [f"{keys} ({family} has no query/key norms)"]
    if ours is None:
        return [f"use_qk_layernorm False ({family} always normalises {QK_NORMS[qk_norm]})"]
    return [
        f"qk_layernorm_per_head {config.qk_layernorm_per_head} "
        f"({family} normalises {QK_NORMS[qk_norm]})"
    ]


def export_problems(config: ModelConfig) -> list[str]:
    """Why Llama cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Llama")
    if config.qkv_bias != config.use_bias_in_attn_linear:
        problems.append(
            f"use_bias_in_qkv {config.qkv_bias} with use_bias_in_attn_linear "
            f"{config.use_bias_in_attn_linear} (Llama's attention_bias is on q, k, v and o alike)"
        )
    if config.sliding_window_width is not None:
        problems.append("sliding_window_width (Llama attends to the whole sequence)")
    return problems


def common_hf_config(
    config: ModelConfig,
    eod_id: int | None,
    vocab: int,
    head_dim_key: bool = True,
    act_key: str = "hidden_act",
) -> dict[str, Any]:
    """The config.json values Llama, Mistral, Qwen, OLMo 2 and Gemma 2 share. Without
    `head_dim_key` (Qwen2Config, Olmo2Config have no such key, but their models read it where it
    is set) `head_dim` is written only where heads are not hidden / heads wide. `act_key` is the
    key of the gate's activation (Gemma2Config's is `hidden_activation`)."""
    values = dict(
        vocab_size=vocab,
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_positions,
        initializer_range=config.init_method_std,
        rms_norm_eps=config.rms_norm_epsilon,
        tie_word_embeddings=not config.no_weight_tying,
        rope_parameters=rope_parameters(config),
        attention_dropout=config.attention_dropout,
        bos_token_id=eod_id,
        eos_token_id=eod_id,
    )
    values[act_key] = HF_ACTIVATIONS[config.activation]
    if not head_dim_key and config.attention_width == config.hidden_size:
        del values["head_dim"]
    return values


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


def import_problems(hf: Any, family: str = "Llama", act_key: str = "hidden_act") -> list[str]:
    """Why neox-model cannot reproduce the Llama-family (Llama, Mistral, Qwen, OLMo 2, Gemma 2)
    model `hf` describes, its gate's activation under `act_key`; empty when it can."""
    problems = rope_problems(hf)
    if rotary_fraction(hf) != 1.0:
        problems.append(
            f"partial_rotary_factor {rotary_fraction(hf)} ({family} rotates whole heads)"
        )
    activation = getattr(hf, act_key)
    if activation not in NEOX_ACTIVATIONS:
        problems.append(
            f"{act_key} {activation!r} (neox-model gates with {sorted(NEOX_ACTIVATIONS)})"
        )
    return problems


def head_width(hf: Any) -> int | None:
    """neox's `kv_channels` of a Llama-family config: None where heads are hidden / heads."""
    head_dim: int | None = getattr(hf, "head_dim", None)
    if not head_dim or head_dim * hf.num_attention_heads == hf.hidden_size:
        return None
    return head_dim


def common_model_config(
    hf: Any, family: str, reasons: Sequence[str] = (), act_key: str = "hidden_act", **extra: Any
) -> ModelConfig:
    """The neox architecture of a Llama-family config (vocabulary not set); `reasons` are the
    family's own reasons to refuse it, reported with the common ones; `act_key` names the gate's
    activation."""
    problems = [*import_problems(hf, family, act_key), *reasons]
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
        kv_channels=head_width(hf),
        seq_length=hf.max_position_embeddings,
        max_position_embeddings=hf.max_position_embeddings,
        pos_emb="rotary",
        rotary_emb_base=rope_base(hf),
        rope_scaling=rope_scaling(hf),
        norm="rmsnorm",
        rms_norm_epsilon=hf.rms_norm_eps,
        use_bias_in_norms=False,
        activation=NEOX_ACTIVATIONS[getattr(hf, act_key)],  # type: ignore[arg-type]
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
