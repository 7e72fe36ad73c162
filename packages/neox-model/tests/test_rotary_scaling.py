"""Rotary scaling (`rope_scaling`): each type's frequencies against the independent reference's,
at positions far past the original context, and what the model does with them."""

import dataclasses
import math

import pytest
import torch

from neox_model import Transformer
from neox_model.rotary import RotaryEmbedding, base_frequencies
from neox_testing import style

import reference

SCALINGS = {
    "linear": dict(rope_type="linear", factor=4.0),
    "llama3": dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=256,
    ),
    "yarn": dict(rope_type="yarn", factor=16.0, original_max_position_embeddings=256),
    "yarn-untruncated": dict(
        rope_type="yarn", factor=16.0, original_max_position_embeddings=256, truncate=False
    ),
    "yarn-mscale": dict(
        rope_type="yarn",
        factor=16.0,
        original_max_position_embeddings=256,
        mscale=1.0,
        mscale_all_dim=0.5,
    ),
}
DIM, BASE = 64, 10000


def config(scaling):
    return style("llama", rope_scaling=scaling, seq_length=4096, kv_channels=DIM)


@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_every_scaling_rotates_as_the_reference_far_past_the_original_context(name):
    scaled = config(SCALINGS[name])
    rotary = RotaryEmbedding(DIM, BASE, max_positions=4096, scaling=scaled.rope_scaling)
    positions = torch.arange(0, 4096, 7)
    cos, sin = rotary(positions)
    theta = torch.tensor(
        [reference.scaled_theta(scaled.rope_scaling, j, DIM, BASE, 4096) for j in range(DIM // 2)],
        dtype=torch.float64,
    )
    angles = positions.double()[:, None] * theta[None]
    factor = reference.yarn_attention_factor(scaled.rope_scaling)
    if name == "yarn-mscale":  # DeepSeek's ratio: (0.1 ln 16 + 1) / (0.05 ln 16 + 1)
        factor = (0.1 * math.log(16) + 1) / (0.05 * math.log(16) + 1)
    expected_cos = torch.cat([angles.cos(), angles.cos()], -1) * factor
    expected_sin = torch.cat([angles.sin(), angles.sin()], -1) * factor
    # float32 frequencies times positions up to 4095: an angle error of a few 1e-4 at most
    torch.testing.assert_close(cos.double(), expected_cos, atol=1e-3, rtol=0)
    torch.testing.assert_close(sin.double(), expected_sin, atol=1e-3, rtol=0)
    unscaled = base_frequencies(DIM, BASE)
    assert not torch.allclose(rotary.inv_freq, unscaled)  # the setting changes something
    if name.startswith(("llama3", "yarn")):  # the highest frequencies are kept as they were
        assert rotary.inv_freq[0] == unscaled[0]


def test_dynamic_scaling_grows_the_base_only_past_the_original_context():
    scaling = dict(rope_type="dynamic", factor=4.0, original_max_position_embeddings=6)
    m = Transformer(style("llama", rope_scaling=scaling), seed=3).eval()
    plain = Transformer(style("llama"), seed=3).eval()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m(ids[:, :6]), plain(ids[:, :6]))  # within the original context
        long = m(ids)
        torch.testing.assert_close(
            long, reference.logits(m.config, m.state_dict(), ids), atol=2e-5, rtol=1e-4
        )
        assert not torch.allclose(long, plain(ids), atol=1e-6, rtol=0)


def test_a_scaled_model_decodes_with_its_cache_as_it_recomputes():
    """Static scalings do not depend on the length: the cache gives the recomputed logits."""
    m = Transformer(style("qwen3"), seed=4).eval()
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(5))
    cache = m.new_cache(batch=1)
    with torch.no_grad():
        steps = [m(ids[:, :5], cache=cache)] + [
            m(ids[:, i : i + 1], cache=cache) for i in range(5, 12)
        ]
        torch.testing.assert_close(torch.cat(steps, 1), m(ids), atol=1e-5, rtol=1e-5)


def test_query_key_norms_are_per_head_weights_of_head_width():
    m = Transformer(style("qwen3"), seed=0)
    attention = m.blocks[0].attention
    assert attention.q_norm is not None and attention.k_norm is not None
    assert attention.q_norm.weight.shape == attention.k_norm.weight.shape == (16,)
    without = Transformer(dataclasses.replace(style("qwen3"), use_qk_layernorm=False), seed=0)
    assert without.blocks[0].attention.q_norm is None
