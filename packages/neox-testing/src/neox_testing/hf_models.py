"""Tiny random Hugging Face `transformers` models built from a config (no downloads), for the
import, export and end-to-end tests. transformers is imported when a model is built."""

from __future__ import annotations

import copy
from typing import Any

from neox_testing.checkpoints import perturb

# Llama 3.1's rotary scaling from an original context of 16 positions (high_freq_factor 2, not
# 4, so that the shortest wavelength, 2 pi, is kept): base 500 puts a head's 8 frequencies in all
# three bands (kept, blended, divided by the factor)
LLAMA3: dict[str, Any] = dict(
    intermediate_size=96,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 2.0,
        "original_max_position_embeddings": 16,
    },
)
# kind -> (transformers' config and model class names, the kind's own config values)
HF_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # Pythia-style: partial rotary, parallel residual, untied
    "neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(
            intermediate_size=256,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
            },
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
    ),
    # GQA, SwiGLU, RMSNorm, an MLP width sized by mlp_multiple_of (96 = 3 x 32)
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(intermediate_size=96, num_key_value_heads=2, rms_norm_eps=1e-5),
    ),
    # GQA + sliding window (a query sees itself and 7 keys before it)
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(intermediate_size=96, num_key_value_heads=2, sliding_window=8),
    ),
    # Llama 3.1: llama's shape, rotary scaled by frequency band (`LLAMA3`)
    "llama3": ("LlamaConfig", "LlamaForCausalLM", LLAMA3),
    # Llama 3.2: Llama 3.1's with the output tied to the input embedding
    "llama3.2": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA3, tie_word_embeddings=True)),
    # biases on q, k and v only; rotary linearly scaled (positions / 2)
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(
            intermediate_size=96,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
        ),
    ),
    # heads 32 wide (hidden / heads is 16), per-head query/key RMSNorm, yarn from an original
    # context of 16 positions (of a head's 16 frequencies the first is kept, the second blended,
    # the others divided by the factor; cos and sin scaled by 0.1 ln 4 + 1)
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(
            intermediate_size=96,
            num_key_value_heads=2,
            head_dim=32,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 1000000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    # norms after attention and MLP, query and key RMSNorms each over all heads (2 key/value
    # heads: a tensor-parallel rank holds part of each norm's weight), OLMo 2's rotary base with
    # Llama 3.1's scaling from an original context of 48 positions (of a head's 8 frequencies
    # the first is kept, the second blended, the others divided by the factor); Olmo2Config's
    # default padding and end-of-text ids (1, 50279) unset
    "olmo2": (
        "Olmo2Config",
        "Olmo2ForCausalLM",
        dict(
            intermediate_size=96,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            pad_token_id=None,
            eos_token_id=None,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 2.0,
                "original_max_position_embeddings": 48,
            },
        ),
    ),
    # Gemma 2: RMSNorms on both sides of attention and MLP (their weights offsets from 1,
    # perturbed as the others' weights are), heads 32 wide (hidden / heads is 16) with scores
    # scaled by 1 / sqrt(16) and soft-capped, a window on layer 0 (a query sees itself and 7 keys
    # before it) and the whole sequence on layer 1, embeddings scaled by sqrt(64), GeGLU with
    # tanh, logits soft-capped, the output tied, rotary linearly scaled (positions / 2). Weights
    # of std 0.05 and caps 0.5 and 1 so that each feature moves the logits over 48 tokens
    # (test_import checks it; at std 0.1 the scaled, tied embedding makes every greedy token the
    # prompt's last); Gemma2Config's default padding id (0) unset, as export writes it
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            intermediate_size=96,
            num_key_value_heads=2,
            head_dim=32,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=0.5,
            final_logit_softcapping=1.0,
            sliding_window=8,
            rms_norm_eps=1e-6,
            initializer_range=0.05,
            pad_token_id=None,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        ),
    ),
    # Mixtral: every layer 4 SwiGLU experts 96 wide, 2 per token (renormalised), GQA, a
    # sliding window (a query sees itself and 7 keys before it)
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(
            intermediate_size=96,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=8,
            router_aux_loss_coef=0.02,
        ),
    ),
    # Qwen2-MoE: layer 0 has 4 experts 32 wide, 2 per token (not renormalised), and a shared
    # expert 80 wide behind its sigmoid gate; layer 1 a dense MLP 96 wide (mlp_only_layers);
    # biases on q, k and v
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            intermediate_size=96,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=80,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            mlp_only_layers=[1],
            num_key_value_heads=2,
            router_aux_loss_coef=0.02,
        ),
    ),
}
# what every kind shares: 2 layers 64 wide, 4 heads, 64 positions, weights of std 0.1
HF_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "initializer_range": 0.1,
}


def hf_model(kind: str, vocab_rows: int = 384, **overrides: Any) -> Any:
    """A tiny random transformers model of `kind` (a key of `HF_KINDS`) with `vocab_rows`
    embedding rows, its norms perturbed (`perturb`), in eval mode; the same weights each call."""
    import torch
    import transformers

    config_name, model_name, values = HF_KINDS[kind]
    values = copy.deepcopy(values)  # transformers fills in rope_parameters where it is given
    config = getattr(transformers, config_name)(
        **{"vocab_size": vocab_rows, **HF_TINY, **values, **overrides}
    )
    torch.manual_seed(0)
    return perturb(getattr(transformers, model_name)(config)).eval()
