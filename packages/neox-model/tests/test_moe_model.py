"""Mixture-of-experts layers in the model: which layers, the weights and their counts, the
auxiliary losses in the training loss (as transformers' Mixtral computes them over the layers),
and everything else a layer has to keep working: checkpointed activations, the KV cache."""

import dataclasses

import pytest
import torch

from neox_model import Transformer, count_parameters
from neox_model.moe import MoE
from neox_testing import style

MIXTRAL = dict(
    moe_num_experts=4,
    moe_top_k=2,
    moe_router_type="softmax_topk",
    moe_loss_coeff=0.02,
    moe_z_loss_coeff=0.001,
)


def moe_model(seed=3, **overrides):
    config = style("llama", num_layers=3, **{**MIXTRAL, **overrides})
    return Transformer(config, seed=seed)


def ids(seed=0, shape=(2, 12)):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def router_logits(model, tokens):
    """Each MoE layer's router logits in the last forward (through forward hooks)."""
    seen = []
    hooks = [
        block.mlp.register_forward_hook(lambda m, i, out: seen.append(out.router_logits))
        for block in model.blocks
        if isinstance(block.mlp, MoE)
    ]
    model(tokens[:, :-1], labels=tokens[:, 1:])
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize(("interval", "expected"), [(1, [0, 1, 2]), (2, [0, 2]), (3, [0])])
def test_moe_layers_every_interval_counted_from_0_as_gpt_neox(interval, expected):
    model = moe_model(moe_expert_interval=interval)
    assert [i for i, b in enumerate(model.blocks) if isinstance(b.mlp, MoE)] == expected
    assert model.config.moe_layers == len(expected)


def test_the_training_loss_adds_the_weighted_auxiliary_losses_to_the_lm_loss():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    model = moe_model(moe_expert_interval=2).train()
    tokens = ids()
    logits = router_logits(model, tokens)
    loss = model(tokens[:, :-1], labels=tokens[:, 1:])
    lm, aux = model.lm_loss, model.moe_losses
    # transformers' loss over the router logits of both MoE layers together
    theirs = load_balancing_loss_func(tuple(logits), 4, 2)
    torch.testing.assert_close(aux.load_balancing, theirs)
    z = torch.stack([torch.logsumexp(g, -1).square().mean() for g in logits]).mean()
    torch.testing.assert_close(aux.z, z)
    torch.testing.assert_close(loss, lm + 0.02 * theirs + 0.001 * z)
    assert aux.expert_share.sum().item() == pytest.approx(1.0)
    with torch.no_grad():  # evaluation: the language-model loss alone
        assert torch.equal(model.eval()(tokens[:, :-1], labels=tokens[:, 1:]), lm)


def test_the_auxiliary_gradient_reaches_the_routers():
    model = moe_model(moe_loss_coeff=0.0, moe_z_loss_coeff=0.0).train()
    with_aux = moe_model(moe_loss_coeff=1.0, moe_z_loss_coeff=0.0).train()
    tokens = ids()
    grads = []
    for m in (model, with_aux):
        m(tokens[:, :-1], labels=tokens[:, 1:]).backward()
        grads.append(m.blocks[0].mlp.router.weight.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_the_sinkhorn_router_trains_without_a_balancing_loss():
    model = moe_model(moe_router_type="sinkhorn", moe_top_k=1, moe_z_loss_coeff=0.0).train()
    tokens = ids()
    loss = model(tokens[:, :-1], labels=tokens[:, 1:])
    assert torch.equal(loss, model.lm_loss)
    assert model.moe_losses.load_balancing > 0  # still measured, for the metrics


def test_activation_checkpointing_gives_the_same_losses_and_gradients():
    tokens = ids()
    results = []
    for chunk in (0, 1, 2):
        model = moe_model()
        model.checkpoint_num_layers = chunk
        loss = model.train()(tokens[:, :-1], labels=tokens[:, 1:])
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        for name, grad in grads.items():
            torch.testing.assert_close(grad, results[0][1][name], msg=name)


def test_the_kv_cache_decodes_what_recomputing_gives():
    model = moe_model(moe_shared_expert_intermediate_size=40).eval()
    tokens = ids(shape=(2, 10))
    with torch.no_grad():
        whole = model(tokens)
        cache = model.new_cache(2)
        parts = [model(tokens[:, :4], cache=cache)]
        parts += [model(tokens[:, i : i + 1], cache=cache) for i in range(4, 10)]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(moe_expert_interval=2, moe_ffn_hidden_size=20),
        dict(moe_shared_expert_intermediate_size=40, use_bias_in_mlp=True),
        dict(activation="gelu", moe_top_k=1),
    ],
)
def test_parameter_counts_equal_the_built_model_and_count_active_experts(overrides):
    model = moe_model(**overrides)
    config = model.config
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    experts = [b.mlp.experts for b in model.blocks if isinstance(b.mlp, MoE)]
    per_expert = sum(p[0].numel() for p in experts[0].parameters())
    unused = len(experts) * (config.moe_num_experts - config.moe_top_k) * per_expert
    assert count_parameters(config, active=True) == count_parameters(config) - unused


def test_expert_weights_are_initialised_as_the_dense_mlps_and_by_the_seed():
    model, again, other = moe_model(seed=5), moe_model(seed=5), moe_model(seed=6)
    experts = model.blocks[0].mlp.experts
    assert torch.equal(experts.w_in, again.blocks[0].mlp.experts.w_in)
    assert not torch.equal(experts.w_in, other.blocks[0].mlp.experts.w_in)
    config = model.config
    std_in = config.init_method_std  # "normal"
    std_out = std_in / (2 * config.num_layers) ** 0.5  # "scaled_normal"
    assert experts.w_in.std().item() == pytest.approx(std_in, rel=0.1)
    assert experts.w_out.std().item() == pytest.approx(std_out, rel=0.1)
    assert not torch.equal(experts.w_in[0], experts.w_in[1])  # each expert its own draw
    assert model.blocks[0].mlp.router.weight.std().item() == pytest.approx(std_in, rel=0.2)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (dict(moe_num_experts=0), "moe_num_experts must be at least 1"),
        (dict(moe_top_k=5), "moe_top_k 5 must lie in 1..moe_num_experts (4)"),
        (dict(moe_expert_interval=0), "moe_expert_interval must be at least 1"),
        (dict(moe_router_type="expert_choice"), "moe_router_type 'expert_choice'"),
        (dict(moe_router_type="topk", moe_normalize_topk=True), "applies to the softmax_topk"),
        (dict(moe_jitter_eps=1.5), "moe_jitter_eps must lie in [0, 1)"),
        (dict(moe_loss_coeff=-1.0), "moe_loss_coeff must not be negative"),
        (dict(moe_ffn_hidden_size=0), "moe_ffn_hidden_size must be positive"),
    ],
)
def test_bad_moe_keys_are_refused_naming_the_key(overrides, words):
    with pytest.raises(ValueError) as err:
        style("llama", **{**MIXTRAL, **overrides})
    assert words in str(err.value)


def test_moe_layers_refuse_what_they_cannot_split():
    from neox_model import TPGroup

    config = moe_model().config  # 4 experts
    three = dataclasses.replace(config, moe_num_experts=3)
    with pytest.raises(ValueError, match="moe_num_experts 3 do not split over 2 tensor-parallel"):
        Transformer(three, tp=TPGroup(None, 0, 2))
    with pytest.raises(ValueError, match="do not run under sequence parallelism yet"):
        Transformer(config, tp=TPGroup(None, 0, 2), sequence_parallel=True)
    with torch.device("meta"):  # rank 1 of 2 holds experts 2 and 3
        half = Transformer(config, tp=TPGroup(None, 1, 2))
    assert half.blocks[0].mlp.experts.w_in.shape[0] == 2
    dense = dataclasses.replace(config, moe_num_experts=1)
    assert not dense.moe and Transformer(dense, tp=TPGroup(None, 0, 1)) is not None


@pytest.mark.parametrize("tied", [False, True])
def test_pipeline_layers_pass_the_statistics_and_compute_the_models_loss_and_gradients(tied):
    """The layers in sequence (as stages would run them) carry the MoE statistics to the loss:
    the training loss with its auxiliary terms, and every gradient, are the model's."""
    from neox_model import TPGroup, pipeline_loss, pipeline_specs

    overrides = dict(moe_expert_interval=2, moe_shared_expert_intermediate_size=40)
    model = moe_model(seed=7, no_weight_tying=not tied, **overrides).train()
    config = model.config
    layers = [spec.cls(*spec.args).train() for spec in pipeline_specs(config, TPGroup.single(), 7)]
    tokens = ids(seed=5)
    x = tokens[:, :-1]
    for layer in layers:
        x = layer(x)
    assert isinstance(x, tuple) and x[1].dtype == torch.float32
    loss_fn = pipeline_loss(TPGroup.single(), config)
    loss = loss_fn(x, tokens[:, 1:])
    expected = model(tokens[:, :-1], labels=tokens[:, 1:])
    torch.testing.assert_close(loss, expected)
    lm, aux = loss_fn.records[-1]
    torch.testing.assert_close(lm, model.lm_loss)
    torch.testing.assert_close(aux.load_balancing, model.moe_losses.load_balancing)
    loss.backward()
    expected.backward()
    grads: dict[str, torch.Tensor] = {}
    for layer in layers:  # a tied output's copy adds to the embedding's gradient
        for key, param in layer.named_parameters():
            name = layer.model_name(key)
            grads[name] = grads[name] + param.grad if name in grads else param.grad
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, msg=name)
    with torch.no_grad():  # evaluation: the language model's loss alone, not recorded
        assert torch.equal(loss_fn(x, tokens[:, 1:]), lm)
    assert len(loss_fn.records) == 1
