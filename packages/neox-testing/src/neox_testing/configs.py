"""Tiny configs the packages' tests share: models that run in milliseconds on a CPU, in the
styles of the model families neox serves, and a GPT-NeoX run config that trains in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neox_model import ModelConfig

TINY_MODEL: dict[str, Any] = dict(
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    seq_length=12,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    vocab_size=64,
    make_vocab_size_divisible_by=8,
)
LLAMA: dict[str, Any] = dict(
    pos_emb="rotary",
    num_kv_heads=2,
    norm="rmsnorm",
    rms_norm_epsilon=1e-6,
    activation="swiglu",
    mlp_multiple_of=16,
    use_bias_in_norms=False,
    use_bias_in_attn_linear=False,
    use_bias_in_mlp=False,
    no_weight_tying=True,
)
STYLES: dict[str, dict[str, Any]] = {
    "pythia": dict(pos_emb="rotary", rotary_pct=0.25, gpt_j_residual=True, no_weight_tying=True),
    "llama": LLAMA,
    "mistral": dict(LLAMA, sliding_window_width=3),
    "falcon": dict(pos_emb="rotary", num_kv_heads=1, gpt_j_residual=True, gpt_j_tied=True),
    "palm": dict(
        pos_emb="rotary",
        num_kv_heads=1,
        gpt_j_residual=True,
        gpt_j_tied=True,
        activation="swiglu",
        use_bias_in_norms=False,
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
    ),
    "alibi": dict(pos_emb="alibi", hidden_size=48, num_attention_heads=6, activation="geglu"),
    "sinusoidal": dict(pos_emb="sinusoidal", norm="scalenorm", activation="relu"),
    "learned": dict(
        pos_emb="learned",
        activation="reglu",
        init_method="xavier_normal",
        output_layer_init_method="xavier_uniform",
    ),
    "none": dict(pos_emb="none", activation="glu", intermediate_size=96),
    # Llama 3.2: tied embeddings, rotary scaled by frequency band (an original context at which
    # the 4 frequencies of a head fall in all three bands)
    "llama3": dict(
        LLAMA,
        no_weight_tying=False,
        rotary_emb_base=500000,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=512,
        ),
    ),
    # Qwen 2: a bias on QKV only
    "qwen2": dict(LLAMA, use_bias_in_qkv=True, rotary_emb_base=1000000),
    # Qwen 3: heads wider than hidden / heads, per-head query/key RMSNorm, yarn scaling (a base
    # and original context at which the ramp covers some of a head's 8 frequencies)
    "qwen3": dict(
        LLAMA,
        kv_channels=16,
        use_qk_layernorm=True,
        rotary_emb_base=100,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
    ),
    # OLMo 2: norms after attention and MLP, query and key norms each over all heads
    "olmo2": dict(
        LLAMA,
        norm_placement="post",
        use_qk_layernorm=True,
        qk_layernorm_per_head=False,
        rmsnorm_fp32_weight=True,
        rotary_emb_base=500000,
    ),
    # Gemma 2: norms on both sides of attention and MLP scaling by 1 + weight, wide heads,
    # scores scaled by 1 / sqrt(query_pre_attn_scalar) and soft-capped, a window on every other
    # layer, scaled embeddings, GeGLU with tanh, tied output; weights 10 times the others' and
    # caps small enough that each of these features moves the logits
    "gemma2": dict(
        LLAMA,
        init_method_std=0.2,
        norm_placement="sandwich",
        rmsnorm_unit_offset=True,
        kv_channels=16,
        query_pre_attn_scalar=12,
        attention_logit_softcapping=2.0,
        final_logit_softcapping=5.0,
        sliding_window_width=3,
        global_attention_every=2,
        scale_embeddings=True,
        activation="geglu_tanh",
        no_weight_tying=False,
    ),
}


def tiny_model(**overrides: Any) -> ModelConfig:
    """`TINY_MODEL` with `overrides`: 2 layers 32 wide, 12 tokens, 64 token ids, no dropout."""
    from neox_model import ModelConfig

    return ModelConfig(**{**TINY_MODEL, **overrides})


def style(name: str, **overrides: Any) -> ModelConfig:
    """The tiny model in the style `name` (a key of `STYLES`), with `overrides`."""
    return tiny_model(**{**STYLES[name], **overrides})


# GPT-NeoX run-config keys of the tiny model in Pythia's style, 64 wide over 64 tokens (the
# vocabulary is the tokenizer's), trained for 5 steps with ZeRO-1
TINY_RUN: dict[str, Any] = dict(
    {key: value for key, value in TINY_MODEL.items() if "vocab" not in key},
    hidden_size=64,
    seq_length=64,
    **STYLES["pythia"],
    optimizer={"type": "Adam", "params": {"lr": 2.0e-3, "betas": [0.9, 0.95], "eps": 1.0e-8}},
    lr_decay_style="cosine",
    warmup=0.2,
    zero_optimization={"stage": 1},
    train_iters=5,
    eval_interval=100,
    eval_iters=2,
    log_interval=1,
    split="95, 5, 0",
    seed=11,
    tokenizer_type="HFTokenizer",
)


def tiny_run(data_path: Path, vocab_file: Path, save: Path, /, **overrides: Any) -> dict[str, Any]:
    """`TINY_RUN` on the token file `data_path` (its prefix) and the HF tokenizer `vocab_file`,
    saving to `save`, with `overrides` (which may replace any of those too)."""
    paths = {"data_path": str(data_path), "vocab_file": str(vocab_file), "save": str(save)}
    return {**TINY_RUN, **paths, **overrides}
