"""Parameter counts from a config alone, without building the model (for planning and checks)."""

from __future__ import annotations

from neox_model.config import ModelConfig


def norm_parameters(config: ModelConfig) -> int:
    """The parameters of one norm layer."""
    if config.norm == "scalenorm":
        return 1
    return config.hidden_size * (2 if config.use_bias_in_norms else 1)


def _linear(fan_in: int, fan_out: int, bias: bool) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def block_parameters(config: ModelConfig) -> int:
    h, inner = config.hidden_size, config.ffn_size
    qkv = config.kv_heads * (config.num_attention_heads // config.kv_heads + 2) * config.head_dim
    attention = _linear(h, qkv, config.use_bias_in_attn_linear) + _linear(
        h, h, config.use_bias_in_attn_linear
    )
    mlp = _linear(h, 2 * inner if config.gated else inner, config.use_bias_in_mlp) + _linear(
        inner, h, config.use_bias_in_mlp
    )
    norms = norm_parameters(config) * (1 if config.gpt_j_tied else 2)
    return attention + mlp + norms


def count_parameters(config: ModelConfig, tensor_parallel: int = 1) -> int:
    """Parameters of the whole model (all tensor-parallel shards together), padded vocabulary
    included; equals the sum over `Transformer(config).parameters()`."""
    h, vocab = config.hidden_size, config.padded_vocab(tensor_parallel)
    embeddings = vocab * h
    if config.pos_emb == "learned":
        embeddings += config.max_positions * h
    output = vocab * h if config.no_weight_tying else 0
    blocks = config.num_layers * block_parameters(config)
    return embeddings + blocks + norm_parameters(config) + output
