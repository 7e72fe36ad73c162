"""Hugging Face `Qwen2ForCausalLM` and `Qwen3ForCausalLM` <-> neox.

Both are Llama's block under Llama's tensor names (`llama.KEYS`): RMSNorm, a gated MLP without
biases, grouped-query attention, rotary scaled as `rope_parameters` says. Qwen 2 has biases on
q, k and v and none on o (neox: `use_bias_in_qkv` without `use_bias_in_attn_linear`). Qwen 3 has
`attention_bias` on q, k, v and o alike, heads `head_dim` wide (neox's `kv_channels`), and an
RMSNorm over each query and each key head after the projection, before rotary
(`self_attn.q_norm` / `k_norm`: neox's `use_qk_layernorm`, `attention.q_norm` / `k_norm`).

Sliding windows: a Qwen config with `use_sliding_window` windows the layers from
`max_window_layers` on (its `layer_types`); neox windows every layer or none, so those two cases
map (`sliding_window` = `sliding_window_width` + 1, as Mistral's) and a mix is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from neox_convert import llama
from neox_convert.key_map import StateDict, from_format, to_format
from neox_convert.llama import (
    ATTENTION_BIASES,
    NO_BIASES,
    bias_problems,
    common_hf_config,
    common_model_config,
    family_problems,
)
from neox_convert.mistral import hf_window, window_problems
from neox_model import ModelConfig

QWEN3_KEYS = dataclasses.replace(
    llama.KEYS,
    format="Hugging Face Qwen3",
    layer={
        **llama.KEYS.layer,
        "attention.q_norm.weight": "self_attn.q_norm.weight",
        "attention.k_norm.weight": "self_attn.k_norm.weight",
    },
)


def qwen2_export_problems(config: ModelConfig) -> list[str]:
    """Why Qwen2 cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Qwen2")
    return problems + bias_problems(
        config, ((True, False, False),), "Qwen2 has biases on q, k and v only"
    )


def qwen3_export_problems(config: ModelConfig) -> list[str]:
    """Why Qwen3 cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Qwen3", qk_norm="per head")
    return problems + bias_problems(
        config,
        (NO_BIASES, ATTENTION_BIASES),
        "Qwen3's attention_bias is on q, k, v and o alike; its MLP has none",
    )


def window_config(config: ModelConfig) -> dict[str, Any]:
    """Qwen's window keys for neox's `sliding_window_width`: every layer windowed, or none."""
    window = hf_window(config)
    if window is None:
        return dict(use_sliding_window=False)
    return dict(use_sliding_window=True, sliding_window=window, max_window_layers=0)


def qwen2_hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The Qwen2Config of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import Qwen2Config

    vocab = padded_vocab or config.padded_vocab_size
    return Qwen2Config(
        **common_hf_config(config, eod_id, vocab, head_dim_key=False),
        **window_config(config),
        architectures=["Qwen2ForCausalLM"],
        dtype=dtype,
    )


def qwen3_hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The Qwen3Config of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import Qwen3Config

    return Qwen3Config(
        **common_hf_config(config, eod_id, padded_vocab or config.padded_vocab_size),
        **window_config(config),
        attention_bias=config.use_bias_in_attn_linear,
        architectures=["Qwen3ForCausalLM"],
        dtype=dtype,
    )


def window(hf: Any) -> tuple[int | None, list[str]]:
    """neox's `sliding_window_width` of a Qwen config, and why it has none that is exact."""
    types = list(hf.layer_types or [])
    sliding = [i for i, kind in enumerate(types) if kind == "sliding_attention"]
    unknown = sorted(set(types) - {"sliding_attention", "full_attention"})
    if unknown:
        return None, [f"layer_types {', '.join(unknown)} (neox-model has full attention)"]
    if not sliding:
        return None, []
    if len(sliding) < len(types):
        full = [i for i in range(len(types)) if i not in sliding]
        return None, [
            f"sliding windows on layers {sliding} but not on {full} (use_sliding_window with "
            f"max_window_layers {hf.max_window_layers}; neox-model windows every layer or none)"
        ]
    if hf.sliding_window is None:  # Hugging Face then windows no layer
        return None, []
    problems = window_problems(hf.sliding_window)
    return (None if problems else hf.sliding_window - 1), problems


def qwen2_model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a Qwen2Config (vocabulary not set)."""
    width, problems = window(hf)
    return common_model_config(
        hf,
        "Qwen2",
        problems,
        use_bias_in_qkv=True,
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
        sliding_window_width=width,
    )


def qwen3_model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a Qwen3Config (vocabulary not set)."""
    width, problems = window(hf)
    return common_model_config(
        hf,
        "Qwen3",
        problems,
        use_qk_layernorm=True,
        use_bias_in_attn_linear=bool(hf.attention_bias),
        use_bias_in_mlp=False,
        sliding_window_width=width,
    )


def qwen3_to_hf(state: StateDict, config: ModelConfig) -> StateDict:
    return to_format(state, config, QWEN3_KEYS)


def qwen3_from_hf(theirs: StateDict, config: ModelConfig) -> StateDict:
    return from_format(theirs, config, QWEN3_KEYS)
