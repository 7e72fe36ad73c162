import importlib.util
import math
from typing import get_args

import pytest
import torch

from neox_model import IGNORE_INDEX, Transformer, count_parameters
from neox_model.config import Activation
from neox_model.norms import build_norm
from neox_testing import STYLES, style

import reference


def tokens(batch=2, seq=12, seed=0, vocab=64):
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def model(config, seed=0):
    return Transformer(config, seed=seed).eval()


@pytest.mark.parametrize("name", sorted(STYLES))
def test_every_style_matches_the_independent_reference(name):
    config = style(name)
    m = model(config, seed=1)
    with torch.no_grad():  # norms away from their initial ones (or zeros, Gemma's offsets)
        g = torch.Generator().manual_seed(3)
        for key, param in m.named_parameters():
            if "norm" in key:
                param.add_(0.3 * torch.randn(param.shape, generator=g))
    ids = tokens()
    with torch.no_grad():
        ours = m(ids)
        theirs = reference.logits(config, m.state_dict(), ids)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("activation", get_args(Activation))
def test_every_activation_matches_the_reference(activation):
    config = style("pythia", activation=activation)
    m = model(config, seed=2)
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(
            m(ids), reference.logits(config, m.state_dict(), ids), atol=2e-5, rtol=1e-4
        )


def test_logits_are_causal():
    m = model(style("mistral"))
    ids = tokens()
    logits = m(ids)
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 64
    after = m(changed)
    torch.testing.assert_close(after[:, :7], logits[:, :7])
    assert not torch.allclose(after[:, 7:], logits[:, 7:])


def in_pieces(name, static):
    """(the logits of 12 tokens fed through a KV cache 5, 3, 1, 1, 1, 1 at a time, the logits of
    the whole sequence, the cache) of a style's model."""
    m = model(style(name), seed=3)
    ids = tokens()
    with torch.no_grad():
        full = m(ids)
        cache = m.new_cache(batch=2, static=static)
        pieces = [m(ids[:, :5], cache=cache), m(ids[:, 5:8], cache=cache)]
        pieces += [m(ids[:, i : i + 1], cache=cache) for i in range(8, 12)]
    return pieces, full, cache


@pytest.mark.parametrize("name", sorted(STYLES))
def test_kv_cache_equals_recomputing_the_whole_sequence(name):
    pieces, full, _ = in_pieces(name, static=False)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["pythia", "mistral", "alibi"])
def test_greedy_decoding_with_the_cache_gives_the_recomputed_tokens(name):
    config = style(name, seq_length=24)
    m = model(config, seed=4)
    prompt = tokens(batch=1, seq=4)
    with torch.no_grad():
        recomputed = prompt
        for _ in range(16):
            next_id = m(recomputed)[:, -1].argmax(-1, keepdim=True)
            recomputed = torch.cat([recomputed, next_id], 1)
        cache = m.new_cache(batch=1)
        cached, step = prompt, prompt
        for _ in range(16):
            next_id = m(step, cache=cache)[:, -1].argmax(-1, keepdim=True)
            cached, step = torch.cat([cached, next_id], 1), next_id
    assert cached.tolist() == recomputed.tolist()


@pytest.mark.parametrize("name", sorted(STYLES))
def test_a_static_kv_cache_equals_recomputing_the_whole_sequence(name):
    pieces, full, cache = in_pieces(name, static=True)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_a_static_cache_refuses_flash_attention():
    with torch.device("meta"):
        m = Transformer(style("pythia", attention_config=((("flash",), 2),)))
    with pytest.raises(ValueError, match="static KV cache needs attention_config without flash"):
        m.new_cache(batch=1, static=True)


def test_the_rotary_table_holds_what_recomputing_gives_at_every_position():
    rotary = model(style("pythia", seq_length=4096)).rotary
    assert rotary is not None
    positions = torch.arange(4096)
    for looked_up, recomputed in zip(rotary(positions), rotary.angles(positions), strict=True):
        assert torch.equal(looked_up, recomputed)
    for position in (0, 1, 2047, 4095):  # one at a time, as each decoding step asks
        one = torch.tensor([position])
        assert all(map(torch.equal, rotary(one), rotary.angles(one)))


def test_a_full_cache_and_too_long_inputs_are_refused():
    m = model(style("pythia"))
    cache = m.new_cache(batch=1, max_length=6)
    m(tokens(batch=1, seq=6), cache=cache)
    with pytest.raises(ValueError, match="KV cache full"):
        m(tokens(batch=1, seq=1), cache=cache)
    with pytest.raises(ValueError, match="positions up to 13 exceed 12"):
        m(tokens(seq=13))


def test_init_is_deterministic_from_the_seed():
    a, b, c = (Transformer(style("llama"), seed=s) for s in (3, 3, 4))
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), name


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("normal", lambda cfg, shape: 0.02),
        ("scaled_normal", lambda cfg, shape: 0.02 / math.sqrt(2 * cfg.num_layers)),
        ("small_init", lambda cfg, shape: math.sqrt(2 / (5 * cfg.hidden_size))),
        ("wang_init", lambda cfg, shape: 2 / (cfg.num_layers * math.sqrt(cfg.hidden_size))),
        ("xavier_normal", lambda cfg, shape: math.sqrt(2 / sum(shape))),
        ("xavier_uniform", lambda cfg, shape: math.sqrt(2 / sum(shape))),
    ],
)
def test_init_methods_give_their_standard_deviation(method, expected):
    cfg = style(
        "pythia",
        num_layers=8,
        hidden_size=256,
        num_attention_heads=4,
        init_method=method,
        output_layer_init_method="normal",
    )
    m = Transformer(cfg)
    weight = m.layers[0].mlp.dense_h_to_4h.weight
    assert weight.std().item() == pytest.approx(expected(cfg, tuple(weight.shape)), rel=0.05)
    assert m.layers[0].attention.dense.weight.std().item() == pytest.approx(0.02, rel=0.05)
    if method == "xavier_uniform":
        bound = math.sqrt(6 / sum(weight.shape))
        assert weight.abs().max().item() <= bound


@pytest.mark.parametrize("name", sorted(STYLES))
def test_parameter_count_equals_the_built_model_on_meta(name):
    config = style(name)
    with torch.device("meta"):
        m = Transformer(config)
    assert m.embed_in.weight.is_meta
    assert count_parameters(config) == sum(p.numel() for p in m.parameters())


def test_parameter_count_of_a_published_size():
    # Pythia-160M as released (GPTNeoX, vocab padded to 50304): 162,322,944 parameters
    sizes = dict(num_layers=12, hidden_size=768, num_attention_heads=12, seq_length=2048)
    pythia = style("pythia", **sizes, vocab_size=50277, make_vocab_size_divisible_by=128)
    assert count_parameters(pythia) == 162_322_944


def test_biases_and_norms_follow_the_switches():
    names = [n for n, _ in Transformer(style("palm")).named_parameters()]
    assert not [n for n in names if n.endswith("bias")]
    assert not [n for n in names if "post_attention_layernorm" in n]  # gpt_j_tied: one norm
    assert "embed_out.weight" not in names  # tied output


def test_activation_checkpointing_gives_the_same_gradients():
    ids = tokens()
    grads = []
    for chunk in (0, 1, 2):
        m = Transformer(style("llama", num_layers=3), seed=5, checkpoint_num_layers=chunk).train()
        m(ids[:, :-1], labels=ids[:, 1:]).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for other in grads[1:]:
        for g0, g1 in zip(grads[0], other, strict=True):
            torch.testing.assert_close(g0, g1)


def test_loss_is_the_mean_cross_entropy_of_the_logits():
    m = model(style("llama"))
    ids = tokens()
    logits = m(ids[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(m(ids[:, :-1], labels=ids[:, 1:]), expected)


def test_ignored_labels_are_left_out_of_the_loss_and_its_gradient():
    m = model(style("llama"))
    ids = tokens()
    labels = ids[:, 1:].clone()
    labels[0, ::2] = IGNORE_INDEX  # half of the first row, the end of the second
    labels[1, 7:] = IGNORE_INDEX
    loss = m(ids[:, :-1], labels=labels)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    # independently: -log p(label) averaged over the kept positions only
    log_probs = m(ids[:, :-1]).log_softmax(-1)
    kept = labels != IGNORE_INDEX
    expected = -log_probs[kept].gather(-1, labels[kept].unsqueeze(-1)).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for name, param in m.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, msg=name)
    assert abs(loss.item() - m(ids[:, :-1], labels=ids[:, 1:]).item()) > 1e-3  # masking counts


def test_rotary_frequencies_are_saved_only_when_asked():
    assert "rotary.inv_freq" not in Transformer(style("pythia")).state_dict()
    saved = Transformer(style("pythia", rotary_save_freqs_buffer=True)).state_dict()
    assert saved["rotary.inv_freq"].shape == (1,)  # rotary_dim 2 (0.25 of head size 8) / 2


def test_compiled_blocks_compute_the_same_logits():
    m = model(style("llama", num_layers=1))
    ids = tokens()
    with torch.no_grad():
        eager = m(ids)
        m.compile_blocks()
        compiled = m(ids)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None,
    reason="needs a CUDA GPU and flash-attn (the neox-model[flash] extra)",
)
@pytest.mark.parametrize("name", ["pythia", "llama", "mistral", "alibi"])
def test_flash_attention_computes_what_sdpa_does(name):
    flash_config = style(name, attention_config=((("flash",), 2),))
    flash = Transformer(flash_config, seed=6).cuda().to(torch.bfloat16).eval()
    sdpa = Transformer(style(name), seed=6).cuda().to(torch.bfloat16).eval()
    ids = tokens().cuda()
    with torch.no_grad():
        torch.testing.assert_close(flash(ids).float(), sdpa(ids).float(), atol=3e-2, rtol=3e-2)


NORM_FAMILIES = {
    "llama": {},
    "olmo2": dict(rmsnorm_fp32_weight=True),
    "gemma2": dict(rmsnorm_unit_offset=True),
}


def bf16_norm(weight, **overrides):
    config = style("llama", hidden_size=weight.numel(), rms_norm_epsilon=1e-6, **overrides)
    norm = build_norm(config).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


@pytest.mark.parametrize("family", sorted(NORM_FAMILIES))
def test_rmsnorm_in_bf16_rounds_as_each_familys_norm(family):
    """In bf16 the families' norms round differently (the weight applied after rounding or
    before, 1 + weight); each of neox's equals transformers' to the bit."""
    from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm

    theirs_cls = {"llama": LlamaRMSNorm, "olmo2": Olmo2RMSNorm, "gemma2": Gemma2RMSNorm}[family]
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(256, generator=generator) * 0.3 + 0.9).to(torch.bfloat16)
    theirs = theirs_cls(256, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        theirs.weight.copy_(weight)
    x = (torch.randn(4, 64, 256, generator=generator) * 3).to(torch.bfloat16)
    with torch.no_grad():
        expected = theirs(x)
        assert torch.equal(bf16_norm(weight, **NORM_FAMILIES[family])(x), expected)
        if family != "gemma2":  # the check can fail: the other order rounds differently
            other = "llama" if family == "olmo2" else "olmo2"
            assert not torch.equal(bf16_norm(weight, **NORM_FAMILIES[other])(x), expected)
