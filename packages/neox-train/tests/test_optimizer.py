import pytest
import torch

from neox_model import Transformer
from neox_testing import tiny_model
from neox_train.config.sections import OptimizerConfig, OptimizerParams, OptimizerSpec
from neox_train.engine.optimizer import GradientGuard, build_optimizer, parameter_groups


def one_block(**overrides):
    """A one-block model: its parameters are layers.0.* and the embeddings and final norm."""
    return Transformer(tiny_model(num_layers=1, pos_emb="rotary", **overrides))


def test_weight_decay_only_on_weight_matrices():
    model = one_block()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "embed_in.weight",
        "layers.0.attention.dense.weight",
        "layers.0.attention.query_key_value.weight",
        "layers.0.mlp.dense_4h_to_h.weight",
        "layers.0.mlp.dense_h_to_4h.weight",
    ]
    assert all(
        n.endswith("bias") or "norm" in n for n in map(names.get, map(id, no_decay["params"]))
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_adam_means_adamw_with_the_configured_hyper_parameters():
    config = OptimizerConfig(OptimizerSpec("Adam", OptimizerParams(3e-4, (0.9, 0.95), 1e-6)))
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-6
    assert optimizer.defaults["fused"]  # torch's fused kernel, on CPU too


def _guarded(clip, *grads):
    params = [torch.nn.Parameter(torch.ones_like(g)) for g in grads]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    return params, GradientGuard(torch.optim.SGD(params, lr=1.0), clip, None, 0)


def test_the_guard_clips_to_the_global_norm():
    grads = (torch.tensor([3.0, 0.0]), torch.tensor([[4.0]]))  # global norm 5
    params, guard = _guarded(1.0, *grads)
    guard.step()
    assert guard._global_grad_norm == 5.0 and not guard.overflow
    # SGD with lr 1 after clipping to norm 1: p = 1 - g / 5 (to ZeRO's 1e-6 in the divisor)
    torch.testing.assert_close(params[0].detach(), torch.tensor([1 - 0.6, 1.0]))
    torch.testing.assert_close(params[1].detach(), torch.tensor([[1 - 0.8]]))
    params, guard = _guarded(10.0, *grads)  # below the bound: unchanged gradients
    guard.step()
    torch.testing.assert_close(params[0].detach(), torch.tensor([-2.0, 1.0]))


def test_the_guard_skips_a_non_finite_step_and_keeps_the_state():
    params, guard = _guarded(1.0, torch.tensor([1.0, float("nan")]), torch.tensor([2.0]))
    guard.optimizer = torch.optim.AdamW(params, lr=0.1)
    guard.step()
    assert guard.overflow and guard._global_grad_norm != guard._global_grad_norm  # NaN
    assert all(torch.equal(p.detach(), torch.ones_like(p)) for p in params)
    assert guard.state_dict()["state"] == {}  # the optimizer never stepped
    params[0].grad = torch.tensor([0.0, 1.0])
    guard.step()
    assert not guard.overflow and len(guard.state) == 2
    assert guard.param_groups is guard.optimizer.param_groups


def test_lion_takes_a_signed_momentum_step():
    from neox_train.engine.lion import Lion

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.3, -0.1, 0.0])
    opt.step()
    # update = sign(0.1 * g) = [1, -1, 0]; p = p * (1 - 0.1 * 0.5) - 0.1 * update
    torch.testing.assert_close(p.detach(), torch.tensor([0.85, -1.8, 0.475]))
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.01 * torch.tensor([0.3, -0.1, 0.0]))


def test_every_optimizer_type_builds():
    from neox_train.engine.lion import Lion

    model = torch.nn.Linear(3, 3)
    expected = {
        "adam": torch.optim.AdamW,
        "AdamW": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "lion": Lion,
        "cpu_torch_adam": torch.optim.AdamW,
    }
    for kind, cls in expected.items():
        config = OptimizerConfig(OptimizerSpec(kind, OptimizerParams(1e-3, momentum=0.9)))
        assert isinstance(build_optimizer(model, config), cls), kind


def test_norms_of_every_kind_are_not_decayed():
    for norm in ("rmsnorm", "scalenorm"):
        model = one_block(norm=norm)
        _, no_decay = parameter_groups(model, 0.1)
        names = {id(p): n for n, p in model.named_parameters()}
        assert {names[id(p)] for p in no_decay["params"]} >= {"final_layer_norm.weight"}


def test_use_bnb_optimizer_is_bitsandbytes_adam8bit_with_8_bit_moments():
    """As GPT-NeoX: Adam becomes bitsandbytes' Adam8bit; a weight of >= 4096 elements keeps its
    moments as uint8 codes, and the step moves the weights as an Adam step of the same size."""
    import bitsandbytes as bnb

    config = OptimizerConfig(
        OptimizerSpec("Adam", OptimizerParams(1e-2, (0.9, 0.95), 1e-8)),
        weight_decay=0.0,
        use_bnb_optimizer=True,
    )
    model = torch.nn.Linear(128, 64)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, bnb.optim.Adam8bit)
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-8
    before = model.weight.detach().clone()
    model(torch.randn(4, 128)).square().sum().backward()
    optimizer.step()
    # Adam's first step moves each weight by lr x sign(gradient), up to 8-bit rounding
    step = (model.weight.detach() - before).abs()
    assert step.mean() == pytest.approx(1e-2, rel=0.05)
    state = optimizer.state[model.weight]
    assert state["state1"].dtype == torch.uint8 and state["state1"].shape == (64, 128)


def test_use_bnb_optimizer_is_refused_for_other_optimizer_types():
    with pytest.raises(ValueError, match="optimizer type lion has no 8-bit form"):
        OptimizerConfig(OptimizerSpec("lion", OptimizerParams(1e-3)), use_bnb_optimizer=True)
