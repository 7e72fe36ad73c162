"""Parameter counts from a config alone, without building the model (for planning and checks)."""

from __future__ import annotations

from neox_model.config import ModelConfig


def norm_parameters(config: ModelConfig, width: int | None = None) -> int:
    """The parameters of one norm layer over `width` features (default hidden_size)."""
    if config.norm == "scalenorm":
        return 1
    return (width or config.hidden_size) * (2 if config.use_bias_in_norms else 1)


def block_norms(config: ModelConfig) -> int:
    """Norm layers of hidden width per block: before attention and MLP (pre), after them (post),
    both (sandwich); gpt_j_tied shares one."""
    if config.gpt_j_tied:
        return 1
    return 4 if config.norm_placement == "sandwich" else 2


def _linear(fan_in: int, fan_out: int, bias: bool) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def mlp_parameters(config: ModelConfig, inner: int) -> int:
    """One dense MLP (or one expert) of inner width `inner`."""
    h, bias = config.hidden_size, config.use_bias_in_mlp
    return _linear(h, 2 * inner if config.gated else inner, bias) + _linear(inner, h, bias)


def moe_parameters(config: ModelConfig, active: bool = False) -> int:
    """One mixture-of-experts layer's MLP: router, experts and shared expert with its gate;
    `active`: with only the top_k experts a token passes through."""
    h = config.hidden_size
    experts = config.moe_top_k if active else config.moe_num_experts
    total = h * config.moe_num_experts + experts * mlp_parameters(config, config.expert_ffn_size)
    shared = config.moe_shared_expert_intermediate_size
    return total + (mlp_parameters(config, shared) + h if shared else 0)


def block_parameters(config: ModelConfig, layer: int | None = None, active: bool = False) -> int:
    """One block's parameters; `layer` (from 0) decides whether its MLP is a mixture of experts
    (None: a dense block), `active` counts only the experts a token passes through."""
    h, inner = config.hidden_size, config.ffn_size
    qkv = config.kv_heads * (config.num_attention_heads // config.kv_heads + 2) * config.head_dim
    attention = _linear(h, qkv, config.qkv_bias) + _linear(
        config.attention_width, h, config.use_bias_in_attn_linear
    )
    if config.use_qk_layernorm and config.qk_layernorm_per_head:
        attention += 2 * norm_parameters(config, config.head_dim)
    elif config.use_qk_layernorm:  # over all query heads, over all key heads
        attention += config.attention_width + config.kv_heads * config.head_dim
    if layer is not None and config.is_moe_layer(layer):
        mlp = moe_parameters(config, active)
    else:
        mlp = mlp_parameters(config, inner)
    norms = norm_parameters(config) * block_norms(config)
    return attention + mlp + norms


def count_parameters(config: ModelConfig, tensor_parallel: int = 1, active: bool = False) -> int:
    """Parameters of the whole model (all tensor-parallel shards together), padded vocabulary
    included; equals the sum over `Transformer(config).parameters()`. `active`: those one token
    passes through (a mixture of experts' top_k experts, not all of them)."""
    h, vocab = config.hidden_size, config.padded_vocab(tensor_parallel)
    embeddings = vocab * h
    if config.pos_emb == "learned":
        embeddings += config.max_positions * h
    output = vocab * h if config.no_weight_tying else 0
    if config.value_head:
        output = h  # the score head replaces the output layer
    blocks = sum(block_parameters(config, i, active) for i in range(config.num_layers))
    return embeddings + blocks + norm_parameters(config) + output
