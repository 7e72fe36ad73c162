"""Small configs in the styles of the model families neox serves (shared by the tests)."""

from neox_model import ModelConfig

BASE = dict(
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    seq_length=12,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    vocab_size=64,
    make_vocab_size_divisible_by=8,
)
LLAMA = dict(
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
STYLES = {
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


def style(name: str, **overrides) -> ModelConfig:
    return ModelConfig(**{**BASE, **STYLES[name], **overrides})
