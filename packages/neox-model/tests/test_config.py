import pytest

from neox_model import ModelConfig


def small(**overrides):
    values = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=16)
    values.update(overrides)
    return ModelConfig(**values)


def test_derived_sizes_follow_gpt_neox():
    config = small(rotary_pct=0.25, pos_emb="rotary", vocab_size=50277)
    assert config.head_dim == 16
    assert config.rotary_dim == 4
    assert config.ffn_size == 256
    assert config.max_positions == 16
    assert config.padded_vocab_size == 50304  # GPT-NeoX pads 50277 to a multiple of 128


def test_heads_must_divide_hidden_size():
    with pytest.raises(ValueError, match=r"hidden_size \(64\) must be divisible by .*\(5\)"):
        small(num_attention_heads=5)


def test_padded_vocab_needs_a_vocab():
    with pytest.raises(ValueError, match="vocab_size is not set"):
        _ = small().padded_vocab_size


def test_short_max_positions_is_refused():
    with pytest.raises(ValueError, match="smaller than seq_length"):
        small(max_position_embeddings=8)


def test_dict_round_trip_and_unknown_fields():
    config = small(vocab_size=100, gpt_j_residual=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown ModelConfig fields: hidden"):
        ModelConfig.from_dict({**config.to_dict(), "hidden": 3})


def test_gated_mlp_width_follows_gpt_neox_sizing():
    # GPT-NeoX's LLaMA-7B config: intermediate_size 32768, mlp_multiple_of 256 -> 11008 inner
    llama = small(
        hidden_size=4096,
        num_attention_heads=32,
        activation="swiglu",
        intermediate_size=32768,
        mlp_multiple_of=256,
    )
    assert llama.ffn_size == 11008
    assert small(activation="geglu").ffn_size == 85  # int(256 * 2 / 3) // 2
    assert small(intermediate_size=100, mlp_multiple_of=8).ffn_size == 104


def test_grouped_query_heads_must_divide_the_query_heads():
    assert small(num_kv_heads=2).kv_heads == 2
    assert small().kv_heads == 4
    with pytest.raises(
        ValueError, match=r"num_attention_heads \(4\) must be a multiple of num_kv_heads \(3\)"
    ):
        small(num_kv_heads=3)


def test_vocabulary_padding_grows_with_tensor_parallelism():
    config = small(vocab_size=50277)
    assert config.padded_vocab(1) == 50304
    assert config.padded_vocab(2) == 50432  # a multiple of 128 x 2


def test_attention_config_expands_per_layer_and_must_cover_every_layer():
    config = small(num_layers=4, attention_config=((("global",), 4),))
    assert config.attention_types == ("global",) * 4
    with pytest.raises(ValueError, match="describes 2 layers but num_layers is 4"):
        small(num_layers=4, attention_config=((("global",), 2),))


def test_flash_attention_is_an_architecture_choice_valid_without_flash_attn():
    # whether flash-attn is installed is checked where training starts (neox_train.check_inputs)
    config = small(attention_config=((("flash",), 2),))
    assert config.attention_types == ("flash", "flash")


def test_gpt_j_tied_needs_the_parallel_residual():
    with pytest.raises(ValueError, match="set both"):
        small(gpt_j_tied=True)


def test_kv_channels_sets_the_head_width_apart_from_hidden_size():
    config = small(num_attention_heads=5, kv_channels=24, num_kv_heads=1)
    assert (config.head_dim, config.attention_width) == (24, 120)
    with pytest.raises(ValueError, match="kv_channels must be positive"):
        small(kv_channels=0)


def test_the_qkv_bias_follows_the_attention_bias_unless_set():
    assert small().qkv_bias and not small(use_bias_in_attn_linear=False).qkv_bias
    assert small(use_bias_in_attn_linear=False, use_bias_in_qkv=True).qkv_bias


def test_rope_scaling_is_read_from_a_mapping_and_checked():
    config = small(
        pos_emb="rotary",
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    )
    assert ModelConfig.from_dict(config.to_dict()) == config  # a manifest's JSON round trip
    with pytest.raises(ValueError, match="llama3 needs original_max_position_embeddings"):
        small(pos_emb="rotary", rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="rope_scaling scales rotary positions"):
        small(pos_emb="alibi", rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match="factor must be at least 1"):
        small(
            pos_emb="rotary",
            rope_scaling={
                "rope_type": "yarn",
                "factor": 0.5,
                "original_max_position_embeddings": 8,
            },
        )
    with pytest.raises(ValueError, match="high_freq_factor must exceed"):
        small(
            pos_emb="rotary",
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=4.0,
                high_freq_factor=1.0,
                original_max_position_embeddings=8,
            ),
        )


def test_norm_placements_other_than_pre_need_sequential_blocks():
    assert small(norm_placement="post").norm_placement == "post"
    with pytest.raises(ValueError, match="norm_placement 'sandwich' is for sequential blocks"):
        small(norm_placement="sandwich", gpt_j_residual=True)


def test_query_key_norms_over_all_heads_are_rmsnorms():
    small(
        use_qk_layernorm=True, qk_layernorm_per_head=False, norm="rmsnorm", use_bias_in_norms=False
    )
    with pytest.raises(ValueError, match="needs norm: rmsnorm"):
        small(use_qk_layernorm=True, qk_layernorm_per_head=False)
