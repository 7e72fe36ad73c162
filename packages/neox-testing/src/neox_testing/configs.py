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
