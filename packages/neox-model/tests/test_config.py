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
