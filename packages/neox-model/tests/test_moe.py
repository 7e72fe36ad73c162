"""The mixture-of-experts block against a per-token reference written from the papers, against
transformers' Mixtral and Qwen2-MoE blocks, and for dropless, deterministic dispatch."""

import importlib

import pytest
import torch

from neox_model.moe import MoE, MoEConfig, route

from reference import ACTIVATIONS, GATES

HIDDEN, FFN = 16, 24


def hf_module(name):
    """A transformers model module (transformers is in neox-model's test extra)."""
    return importlib.import_module(f"transformers.models.{name}")


def filled(moe, seed=0):
    """Every parameter drawn from N(0, 0.3) by a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return moe


def inputs(shape=(3, 5, HIDDEN), seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), requires_grad=True)


# ---------------------------------------------------------------- the reference, token by token


def reference_expert(state, prefix, e, x, activation):
    h = x @ state[f"{prefix}.w_in"][e]
    if f"{prefix}.b_in" in state:
        h = h + state[f"{prefix}.b_in"][e]
    if activation in GATES:
        up, gate = h.chunk(2, -1)
        if activation == "glu":
            gate = 1 / (1 + torch.exp(-gate))
        elif GATES[activation] is not None:
            gate = ACTIVATIONS[GATES[activation]](gate)
        h = up * gate
    else:
        h = ACTIVATIONS[activation](h)
    y = h @ state[f"{prefix}.w_out"][e]
    return y + state[f"{prefix}.b_out"][e] if f"{prefix}.b_out" in state else y


def reference_moe(config, state, x, activation):
    """Shazeer (2017) / Switch / Mixtral, one token at a time: softmax over the experts, the
    top_k, optionally renormalised, the weighted sum of those experts; Switch's balancing loss
    E * sum_e f_e P_e with f_e = (token-slots sent to e) / tokens."""
    num_experts, k = config.num_experts, config.top_k
    tokens = x.reshape(-1, x.shape[-1])
    outs, counts, prob_sum, lse_sq = [], [0] * num_experts, 0, 0
    for t in range(tokens.shape[0]):
        logits = state["router.weight"] @ tokens[t]
        p = torch.exp(logits - logits.max())
        p = p / p.sum()
        top = sorted(range(num_experts), key=lambda e: -float(p[e].detach()))[:k]
        w = [p[e] for e in top]
        if config.renormalize:
            w = [v / sum(w) for v in w]
        y = sum(
            w[j] * reference_expert(state, "experts", e, tokens[t], activation)
            for j, e in enumerate(top)
        )
        if "shared_expert_gate.weight" in state:
            g = 1 / (1 + torch.exp(-(state["shared_expert_gate.weight"] @ tokens[t])))
            y = y + g * reference_expert(state, "shared_expert", 0, tokens[t], activation)
        outs.append(y)
        for e in top:
            counts[e] += 1
        prob_sum = prob_sum + p
        lse_sq = lse_sq + (logits.max() + torch.log(torch.exp(logits - logits.max()).sum())) ** 2
    n = tokens.shape[0]
    lbl = num_experts * sum(counts[e] / n * prob_sum[e] / n for e in range(num_experts))
    share = torch.tensor(counts, dtype=torch.float32) / (n * k)
    return torch.stack(outs).view(x.shape), lbl, lse_sq / n, share


CASES = {
    "mixtral_swiglu": (MoEConfig(4, 2), "swiglu", False),
    "gpt_neox_topk_gelu_bias": (MoEConfig(4, 2, router_type="topk"), "gelu", True),
    "qwen_shared_geglu": (
        MoEConfig(5, 2, normalize_topk=False, shared_expert_ffn_size=20),
        "geglu",
        False,
    ),
    "top1_relu": (MoEConfig(3, 1), "relu", True),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_the_per_token_reference_with_gradients(name):
    config, activation, bias = CASES[name]
    moe = filled(MoE(config, HIDDEN, FFN, activation, bias))
    x = inputs()
    out = moe(x)
    loss = (out.output * torch.linspace(-1, 1, HIDDEN)).sum() + out.load_balancing_loss
    loss = loss + out.z_loss
    grads = torch.autograd.grad(loss, [x, *moe.parameters()])

    state = {n: p.detach().clone().requires_grad_() for n, p in moe.named_parameters()}
    rx = x.detach().clone().requires_grad_()
    r_out, r_lbl, r_z, r_share = reference_moe(config, state, rx, activation)
    r_loss = (r_out * torch.linspace(-1, 1, HIDDEN)).sum() + r_lbl + r_z
    r_grads = torch.autograd.grad(r_loss, [rx, *state.values()])

    torch.testing.assert_close(out.output, r_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.load_balancing_loss, r_lbl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.z_loss, r_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.expert_share, r_share)
    names = ["input", *state]
    for n, g, rg in zip(names, grads, r_grads, strict=True):
        torch.testing.assert_close(g, rg, atol=1e-5, rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


# ---------------------------------------------------------------- transformers' own blocks


def mixtral_pair(seed=0):
    mixtral = hf_module("mixtral.modeling_mixtral")
    hf_config = mixtral.MixtralConfig(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_local_experts=4,
        num_experts_per_tok=2,
        hidden_act="silu",
        router_jitter_noise=0.0,
    )
    hf = mixtral.MixtralSparseMoeBlock(hf_config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours = MoE(MoEConfig(4, 2, normalize_topk=True), HIDDEN, FFN, "swiglu", bias=False).eval()
    copy_hf_experts(ours, hf.gate.weight, hf.experts.gate_up_proj, hf.experts.down_proj)
    return hf, ours


def copy_hf_experts(ours, router, gate_up, down, shared=None):
    """transformers 5.x stacks experts: gate_up_proj (E, 2I, H) as [gate | up], down_proj
    (E, H, I); ours is w_in (E, H, 2I) as [up | gate], w_out (E, I, H)."""
    with torch.no_grad():
        ours.router.weight.copy_(router)
        gate, up = gate_up.chunk(2, dim=1)
        ours.experts.w_in.copy_(torch.cat([up, gate], dim=1).transpose(1, 2))
        ours.experts.w_out.copy_(down.transpose(1, 2))
        if shared is not None:
            mlp, shared_gate = shared
            w_in = torch.cat([mlp.up_proj.weight, mlp.gate_proj.weight]).T
            ours.shared_expert.w_in.copy_(w_in[None])
            ours.shared_expert.w_out.copy_(mlp.down_proj.weight.T[None])
            ours.shared_expert_gate.weight.copy_(shared_gate.weight)


def grads_of(module, x, out):
    loss = (out * torch.linspace(-1, 1, HIDDEN)).sum()
    return dict(
        zip(
            ["x", *(n for n, _ in module.named_parameters())],
            torch.autograd.grad(loss, [x, *module.parameters()]),
            strict=True,
        )
    )


def test_matches_transformers_mixtral_block_logits_loss_and_gradients():
    hf, ours = mixtral_pair()
    x_hf, x_ours = inputs(), inputs()
    hf_out = hf(x_hf)
    out = ours(x_ours)
    torch.testing.assert_close(out.output, hf_out, atol=1e-5, rtol=1e-5)

    hf_logits, _, _ = hf.gate(x_hf.detach())
    torch.testing.assert_close(out.router_logits, hf_logits, atol=1e-6, rtol=1e-6)
    hf_lbl = hf_module("mixtral.modeling_mixtral").load_balancing_loss_func(
        (hf_logits,), num_experts=4, top_k=2
    )
    torch.testing.assert_close(out.load_balancing_loss, hf_lbl, atol=1e-6, rtol=1e-6)

    g_hf, g = grads_of(hf, x_hf, hf_out), grads_of(ours, x_ours, out.output)
    torch.testing.assert_close(g["x"], g_hf["x"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g["router.weight"], g_hf["gate.weight"], atol=1e-5, rtol=1e-5)
    gate, up = g_hf["experts.gate_up_proj"].chunk(2, dim=1)
    expected_w_in = torch.cat([up, gate], dim=1).transpose(1, 2)
    torch.testing.assert_close(g["experts.w_in"], expected_w_in, atol=1e-5, rtol=1e-5)
    expected_w_out = g_hf["experts.down_proj"].transpose(1, 2)
    torch.testing.assert_close(g["experts.w_out"], expected_w_out, atol=1e-5, rtol=1e-5)


def test_load_balancing_loss_gradient_matches_transformers():
    hf, ours = mixtral_pair(seed=3)
    x = inputs(seed=4)
    out = ours(x)
    (g,) = torch.autograd.grad(out.load_balancing_loss, [ours.router.weight])
    logits, _, _ = hf.gate(x.detach())
    (g_hf,) = torch.autograd.grad(
        hf_module("mixtral.modeling_mixtral").load_balancing_loss_func(
            (logits,), num_experts=4, top_k=2
        ),
        [hf.gate.weight],
    )
    torch.testing.assert_close(g, g_hf, atol=1e-6, rtol=1e-5)


def test_matches_transformers_qwen2_moe_block_with_its_shared_expert():
    qwen2_moe = hf_module("qwen2_moe.modeling_qwen2_moe")
    hf_config = qwen2_moe.Qwen2MoeConfig(
        hidden_size=HIDDEN,
        moe_intermediate_size=FFN,
        shared_expert_intermediate_size=20,
        num_experts=5,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        hidden_act="silu",
    )
    hf = qwen2_moe.Qwen2MoeSparseMoeBlock(hf_config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    config = MoEConfig(5, 2, normalize_topk=False, shared_expert_ffn_size=20)
    ours = MoE(config, HIDDEN, FFN, "swiglu", bias=False).eval()
    copy_hf_experts(
        ours,
        hf.gate.weight,
        hf.experts.gate_up_proj,
        hf.experts.down_proj,
        shared=(hf.shared_expert, hf.shared_expert_gate),
    )
    x_hf, x_ours = inputs(seed=6), inputs(seed=6)
    hf_out, out = hf(x_hf), ours(x_ours)
    torch.testing.assert_close(out.output, hf_out, atol=1e-5, rtol=1e-5)
    g_hf, g = grads_of(hf, x_hf, hf_out), grads_of(ours, x_ours, out.output)
    torch.testing.assert_close(g["x"], g_hf["x"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g["router.weight"], g_hf["gate.weight"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        g["shared_expert_gate.weight"], g_hf["shared_expert_gate.weight"], atol=1e-5, rtol=1e-5
    )
    shared_w_in = torch.cat(
        [g_hf["shared_expert.up_proj.weight"], g_hf["shared_expert.gate_proj.weight"]]
    ).T
    torch.testing.assert_close(g["shared_expert.w_in"][0], shared_w_in, atol=1e-5, rtol=1e-5)
    gate, up = g_hf["experts.gate_up_proj"].chunk(2, dim=1)
    expected_w_in = torch.cat([up, gate], dim=1).transpose(1, 2)
    torch.testing.assert_close(g["experts.w_in"], expected_w_in, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- dispatch


def test_no_token_is_dropped_when_every_token_picks_one_expert():
    moe = filled(MoE(MoEConfig(4, 1), HIDDEN, FFN, "gelu", bias=True))
    x = inputs((4, 16, HIDDEN)).detach()
    x[..., 0] = 5.0
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = 10.0  # every token: logit 50 for expert 2, 0 for the rest
    out = moe(x)
    e = moe.experts
    dense = torch.nn.functional.gelu(x @ e.w_in[2] + e.b_in[2]) @ e.w_out[2] + e.b_out[2]
    torch.testing.assert_close(out.output, dense, atol=1e-5, rtol=1e-5)
    assert out.expert_share.tolist() == [0.0, 0.0, 1.0, 0.0]
    # all 64 tokens went to expert 2, which is 4x a capacity-factor-1 share: f = (0, 0, 1, 0)
    p2 = torch.softmax(out.router_logits.float(), -1)[:, 2].mean()
    torch.testing.assert_close(out.load_balancing_loss, 4 * p2)


def test_two_runs_give_bit_identical_outputs_and_gradients():
    def run():
        moe = filled(MoE(MoEConfig(6, 2, shared_expert_ffn_size=8), HIDDEN, FFN, "swiglu", True))
        x = inputs((2, 33, HIDDEN), seed=9)
        out = moe(x)
        loss = out.output.square().sum() + out.load_balancing_loss + out.z_loss
        return [out.output, *torch.autograd.grad(loss, [x, *moe.parameters()])]

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- routers, jitter, config


def test_jitter_scales_the_router_input_only_in_training():
    config = MoEConfig(4, 2, jitter_eps=0.1)
    moe = filled(MoE(config, HIDDEN, FFN, "swiglu", bias=False))
    x = inputs().detach()
    plain = filled(MoE(MoEConfig(4, 2), HIDDEN, FFN, "swiglu", bias=False))
    assert torch.equal(moe.eval()(x).output, plain.eval()(x).output)

    moe.train()
    logits = moe(x, generator=torch.Generator().manual_seed(7)).router_logits
    noise = torch.rand(x.reshape(-1, HIDDEN).shape, generator=torch.Generator().manual_seed(7))
    scaled = x.reshape(-1, HIDDEN) * (0.9 + 0.2 * noise)
    torch.testing.assert_close(logits, scaled @ moe.router.weight.T)
    assert not torch.allclose(logits, plain.router(x.reshape(-1, HIDDEN)))


def reference_sinkhorn(logits, tol=1e-4):
    """Sinkhorn-Knopp: alternately rescale rows and columns of exp(logits) towards sums 1/T and
    1/E until the column scales settle."""
    c = torch.exp(logits.double())
    rows, cols = torch.ones(c.shape[0], dtype=c.dtype), torch.ones(c.shape[1], dtype=c.dtype)
    while True:
        rows = 1 / (c.shape[0] * ((c * cols).sum(1) + 1e-8))
        new_cols = 1 / (c.shape[1] * ((c * rows[:, None]).sum(0) + 1e-8))
        done = (new_cols - cols).abs().mean() <= tol
        cols = new_cols
        if done:
            return c * rows[:, None] * cols


def test_sinkhorn_router_balances_skewed_logits_in_training_only():
    moe = filled(MoE(MoEConfig(4, 1, router_type="sinkhorn"), HIDDEN, FFN, "gelu", False))
    x = inputs((2, 32, HIDDEN)).detach()
    x[..., 0] = 3.0
    with torch.no_grad():
        moe.router.weight[1, 0] += 2.0  # expert 1 is every token's favourite by logits
    logits = moe.router(x.reshape(-1, HIDDEN))
    assert (logits.argmax(-1) == 1).float().mean() > 0.9

    evaluated = moe.eval()(x)
    assert evaluated.expert_share[1] > 0.9
    trained = moe.train()(x)
    expected = reference_sinkhorn(logits.detach()).argmax(-1)
    share = torch.bincount(expected, minlength=4).float() / expected.numel()
    torch.testing.assert_close(trained.expert_share, share)
    assert trained.expert_share.max() < 0.5
    # each token's weight is sigmoid of its chosen expert's logit (top_k 1)
    e = moe.experts
    chosen = torch.sigmoid(logits.detach()).gather(1, expected[:, None])
    flat = x.reshape(-1, HIDDEN)
    per_token = torch.stack(
        [torch.nn.functional.gelu(flat[t] @ e.w_in[i]) @ e.w_out[i] for t, i in enumerate(expected)]
    )
    torch.testing.assert_close(
        trained.output.reshape(-1, HIDDEN), chosen * per_token, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"num_experts": 4, "top_k": 5}, "moe_top_k 5 must lie in 1..moe_num_experts"),
        ({"num_experts": 0}, "moe_num_experts must be at least 1"),
        ({"num_experts": 4, "router_type": "topk", "normalize_topk": True}, "normalize_topk"),
        ({"num_experts": 4, "jitter_eps": 1.5}, r"moe_jitter_eps must lie in \[0, 1\), got 1.5"),
        ({"num_experts": 4, "shared_expert_ffn_size": -1}, "must not be negative, got -1"),
        ({"num_experts": 4, "router_type": "expert_choice"}, "expert_choice"),
    ],
)
def test_bad_settings_are_refused_with_the_values_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MoEConfig(**kwargs)


def test_softmax_topk_weights_sum_to_one_only_when_normalised():
    x = inputs().detach()
    for normalize, expect_one in ((True, True), (False, False)):
        moe = filled(MoE(MoEConfig(4, 2, normalize_topk=normalize), HIDDEN, FFN, "relu", False))
        weights, _ = route(moe(x).router_logits, moe.config, training=False)
        sums_one = torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]))
        assert sums_one is expect_one
