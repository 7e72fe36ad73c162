"""Hugging Face `Gemma2ForCausalLM` <-> neox.

Gemma 2 (Gemma Team, 2024, "Gemma 2: Improving Open Language Models at a Practical Size") is
Llama's block (`llama`: gated MLP, grouped-query attention, rotary scaled as `rope_parameters`
says) with Gemma's features (`gemma_features`), each of which neox-model has:

- RMSNorms on both sides of attention and MLP, x + n1'(attn(n1(x))) then x + n2'(mlp(n2(x))):
  neox's `norm_placement` sandwich. The names cross: Hugging Face's `input_layernorm` is neox's,
  its `post_attention_layernorm` (after attention) is neox's `attention_output_layernorm`, its
  `pre_feedforward_layernorm` is neox's `post_attention_layernorm` (GPT-NeoX's name of the norm
  before the MLP) and its `post_feedforward_layernorm` is neox's `mlp_output_layernorm`.
- Gemma2RMSNorm scales by 1 + weight in float32, then rounds (`rmsnorm_unit_offset`); the
  weight is stored as the offset in both.
- Scores scaled by 1 / sqrt(`query_pre_attn_scalar`) (an integer in Gemma2Config, always set:
  neox's default, the head width, is written out), soft-capped by `attn_logit_softcapping`
  (neox's `attention_logit_softcapping`); logits soft-capped by `final_logit_softcapping`;
  embeddings times sqrt(hidden_size) rounded to their type (`scale_embeddings`); heads
  `head_dim` wide (neox's `kv_channels` where that is not hidden / heads).
- `layer_types`: neox windows all layers, none, or all but every n-th
  (`global_attention_every` n: layers n - 1, 2n - 1, ... attend to the whole sequence, Gemma 2's
  default with n = 2); other patterns are refused. `sliding_window` counts the query itself, as
  Mistral's does (`mistral`): sliding_window_width + 1. Gemma2Model builds the windowed mask
  even where no layer uses it, so a model without a window is written with a window of its whole
  context (a query then sees every key before it either way).
- The MLP has no biases, `attention_bias` is on q, k, v and o alike; `hidden_activation` is the
  gate's activation (gelu_pytorch_tanh: neox's geglu_tanh).

transformers runs Gemma 2 with its eager attention (Gemma2PreTrainedModel does not support SDPA,
which cannot soft-cap), as neox-model writes soft-capped attention out. config.json names no
`pad_token_id`: Gemma2Config's default, 0, would make token 0's embedding a padding row, which
training in transformers leaves unchanged.
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
from neox_convert.mistral import hf_window, window_problems
from neox_model import ModelConfig

KEYS = KeyMap(
    format="Hugging Face Gemma2",
    top=LLAMA_KEYS.top,
    layer={
        "input_layernorm.weight": "input_layernorm.weight",
        "attention.dense.weight": "self_attn.o_proj.weight",
        "attention.dense.bias": "self_attn.o_proj.bias",
        "attention_output_layernorm.weight": "post_attention_layernorm.weight",
        "post_attention_layernorm.weight": "pre_feedforward_layernorm.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
        "mlp_output_layernorm.weight": "post_feedforward_layernorm.weight",
    },
    layer_prefix=LLAMA_KEYS.layer_prefix,
    qkv=LLAMA_KEYS.qkv,  # q_proj, k_proj, v_proj (and their biases with attention_bias)
    up_gate={"mlp.dense_h_to_4h.weight": ("mlp.up_proj.weight", "mlp.gate_proj.weight")},
    derived=LLAMA_KEYS.derived,
)
LAYER_TYPES = ("sliding_attention", "full_attention")


def export_problems(config: ModelConfig) -> list[str]:
    """Why Gemma2 cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Gemma2", placement="sandwich", gemma=True)
    if not config.rmsnorm_unit_offset:
        problems.append("rmsnorm_unit_offset False (Gemma2's RMSNorm scales by 1 + weight)")
    if not config.scale_embeddings:
        problems.append(
            "scale_embeddings False (Gemma2 multiplies its embeddings by sqrt(hidden_size))"
        )
    problems += bias_problems(
        config,
        (NO_BIASES, ATTENTION_BIASES),
        "Gemma2's attention_bias is on q, k, v and o alike; its MLP has none",
    )
    scalar = config.query_pre_attn_scalar
    if scalar is not None and scalar != int(scalar):
        problems.append(f"query_pre_attn_scalar {scalar} (Gemma2Config's is an integer)")
    if config.hidden_size % config.num_attention_heads:
        problems.append(
            f"hidden_size {config.hidden_size} with num_attention_heads "
            f"{config.num_attention_heads} (Gemma2Config requires the heads to divide "
            "hidden_size, whatever their head_dim)"
        )
    return problems


def layer_types(config: ModelConfig) -> list[str]:
    """Gemma2Config's `layer_types`: each layer's attention, windowed or over the sequence."""
    return [
        "full_attention" if config.layer_window(i) is None else "sliding_attention"
        for i in range(config.num_layers)
    ]


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The Gemma2Config of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import Gemma2Config

    vocab = padded_vocab or config.padded_vocab_size
    return Gemma2Config(
        **common_hf_config(config, eod_id, vocab, act_key="hidden_activation"),
        attention_bias=config.use_bias_in_attn_linear,
        query_pre_attn_scalar=int(config.query_pre_attn_scalar or config.head_dim),
        attn_logit_softcapping=_float(config.attention_logit_softcapping),
        final_logit_softcapping=_float(config.final_logit_softcapping),
        sliding_window=hf_window(config) or config.max_positions,
        layer_types=layer_types(config),
        pad_token_id=None,
        architectures=["Gemma2ForCausalLM"],
        dtype=dtype,
    )


def window(hf: Any) -> tuple[int | None, int | None, list[str]]:
    """neox's `sliding_window_width` and `global_attention_every` of a Gemma2Config, and why it
    has none that is exact."""
    types = list(hf.layer_types)
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown:
        return (
            None,
            None,
            [f"layer_types {', '.join(unknown)} (neox-model has {' and '.join(LAYER_TYPES)})"],
        )
    if "sliding_attention" not in types:
        return None, None, []
    full = [i for i, kind in enumerate(types) if kind == "full_attention"]
    every = full[0] + 1 if full else None
    problems = []
    if every is not None and full != list(range(every - 1, len(types), every)):
        problems.append(
            f"full attention on layers {full}, sliding on the others (neox-model attends to the "
            "whole sequence on every n-th layer alone: global_attention_every)"
        )
    if hf.sliding_window is None:
        problems.append("sliding_window null on sliding_attention layers")
    else:
        problems += window_problems(hf.sliding_window)
    return (None if problems else hf.sliding_window - 1), every, problems


def model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a Gemma2Config (vocabulary not set)."""
    width, every, problems = window(hf)
    if getattr(hf, "use_bidirectional_attention", None):
        problems.append("use_bidirectional_attention (neox-model's attention is causal)")
    return common_model_config(
        hf,
        "Gemma2",
        problems,
        act_key="hidden_activation",
        norm_placement="sandwich",
        rmsnorm_unit_offset=True,
        scale_embeddings=True,
        query_pre_attn_scalar=float(hf.query_pre_attn_scalar),
        attention_logit_softcapping=_float(hf.attn_logit_softcapping),
        final_logit_softcapping=_float(hf.final_logit_softcapping),
        sliding_window_width=width,
        global_attention_every=None if width is None else every,
        use_bias_in_attn_linear=bool(hf.attention_bias),
        use_bias_in_mlp=False,
    )


def to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return to_format(state, config, KEYS)


def from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return from_format(theirs, config, KEYS)
