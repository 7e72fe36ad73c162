import math

import pytest
import torch
import torch.nn.functional as F

from neox_model import ModelConfig, Transformer
from neox_model.rotary import RotaryEmbedding, apply_rotary


def config(**overrides):
    values = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        seq_length=12,
        pos_emb="rotary",
        rotary_pct=0.5,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vocab_size=50,
        make_vocab_size_divisible_by=8,
    )
    values.update(overrides)
    return ModelConfig(**values)


def tokens(batch=2, seq=12, seed=0):
    return torch.randint(0, 50, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pos_emb", ["rotary", "learned", "none"])
def test_logits_shape_and_causality(pos_emb):
    model = Transformer(config(pos_emb=pos_emb)).eval()
    ids = tokens()
    logits = model(ids)
    assert logits.shape == (2, 12, 56)  # vocab 50 padded to a multiple of 8
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    after = model(changed)
    torch.testing.assert_close(after[:, :7], logits[:, :7])
    assert not torch.allclose(after[:, 7:], logits[:, 7:])


def test_init_is_deterministic_from_the_seed():
    a, b, c = Transformer(config(), seed=3), Transformer(config(), seed=3), Transformer(config())
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), name


def test_output_layers_use_the_scaled_init():
    cfg = config(num_layers=8, hidden_size=256, num_attention_heads=4, init_method_std=0.02)
    model = Transformer(cfg)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert model.layers[0].attention.dense.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.layers[0].mlp.dense_h_to_4h.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.layers[0].attention.dense.bias) == 0


def test_tied_and_untied_output():
    tied = Transformer(config())
    assert tied.embed_out is None
    assert "embed_out.weight" not in tied.state_dict()
    untied = Transformer(config(no_weight_tying=True))
    assert untied.embed_out.weight.shape == (56, 32)


def test_parallel_residual_changes_the_function():
    ids = tokens()
    seq = Transformer(config(gpt_j_residual=False), seed=1).eval()
    par = Transformer(config(gpt_j_residual=True), seed=1).eval()
    assert not torch.allclose(seq(ids), par(ids))


def test_activation_checkpointing_gives_the_same_gradients():
    ids = tokens()
    grads = []
    for chunk in (0, 1, 2):
        model = Transformer(config(num_layers=3), seed=5).train()
        model.checkpoint_num_layers = chunk
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        for g0, g1 in zip(grads[0], other, strict=True):
            torch.testing.assert_close(g0, g1)


def reference_attention(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """Attention of block 0 written out with an explicit mask and softmax."""
    attn, cfg = model.layers[0].attention, model.config
    batch, seq, _ = x.shape
    qkv = attn.query_key_value(x).view(batch, seq, cfg.num_attention_heads, 3, cfg.head_dim)
    q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))
    cos, sin = model.rotary(torch.arange(seq))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)
    scores = scores.masked_fill(torch.ones(seq, seq).triu(1).bool(), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, -1)
    return attn.dense(out)


def test_sdpa_attention_equals_the_math_reference():
    model = Transformer(config(), seed=2).eval()
    x = torch.randn(2, 12, 32)
    rope = model.rotary(torch.arange(12))
    torch.testing.assert_close(model.layers[0].attention(x, rope), reference_attention(model, x))


def test_rotary_rotates_only_rotary_dims_and_encodes_relative_position():
    rotary = RotaryEmbedding(rotary_dim=4, base=10000)
    cos, sin = rotary(torch.arange(10))
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rq = apply_rotary(q.expand(1, 1, 10, 8), cos, sin)
    rk = apply_rotary(k.expand(1, 1, 10, 8), cos, sin)
    torch.testing.assert_close(rq[..., 4:], q.expand(1, 1, 10, 8)[..., 4:])
    dots = (rq[0, 0, :, None, :4] * rk[0, 0, None, :, :4]).sum(-1)  # (pos_q, pos_k)
    torch.testing.assert_close(dots[5, 2], dots[7, 4])  # same offset, same score
    assert not torch.allclose(dots[5, 2], dots[5, 4])


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="exceeds 12"):
        Transformer(config())(tokens(seq=13))
