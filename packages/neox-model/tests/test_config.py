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
