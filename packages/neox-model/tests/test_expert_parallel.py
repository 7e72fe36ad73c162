"""Expert parallelism over two gloo processes against one process: each rank routes its own
tokens and the token-slots travel to the rank holding their experts (all-to-all) and back.

The reference is one process running both ranks' batches: the logits and losses of each batch
are the same numbers, the gradients of the parameters every rank holds (router, attention,
norms, shared expert) summed over the ranks are the single model's for the summed loss, and a
rank's expert gradients alone are the single model's for its experts (they cover the slots of
both ranks' tokens)."""

import os

import pytest
import torch
import torch.distributed as dist

from neox_model import TPGroup, Transformer
from neox_model.moe import MoE, MoEConfig, MoELosses
from neox_testing import spawn_ranks, style

SEED = 5
EXPERTS = 4
MIXTRAL = dict(
    moe_num_experts=4,
    moe_top_k=2,
    moe_router_type="softmax_topk",
    moe_loss_coeff=0.1,
    moe_z_loss_coeff=0.01,
)
# Mixtral's router with both auxiliary losses; Qwen2-MoE's with a shared expert on layer 0
# only; GPT-NeoX's Sinkhorn router, one expert per token, GELU experts with biases; the first
# again with activation checkpointing (the recomputation exchanges the slots again)
STYLES = {
    "mixtral": (
        "llama",
        dict(MIXTRAL),
        0,
    ),
    "qwen": (
        "qwen2",
        dict(
            moe_num_experts=4,
            moe_router_type="softmax_topk",
            moe_normalize_topk=False,
            moe_expert_interval=2,
            moe_ffn_hidden_size=20,
            moe_shared_expert_intermediate_size=40,
        ),
        0,
    ),
    "sinkhorn": ("pythia", dict(moe_num_experts=4, moe_top_k=1), 0),
    "mixtral-checkpointed": (
        "llama",
        dict(MIXTRAL),
        1,
    ),
}


def config(name):
    base, overrides, _ = STYLES[name]
    return style(base, **overrides)


def batch(rank):
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(10 + rank))


def is_expert(name):
    """A routed expert's parameter (split over the ranks), not the shared expert's."""
    return name.split(".")[-2] == "experts"


def run_rank(model, rank):
    """Logits (no gradient) and the training loss of rank `rank`'s batch, backward run."""
    ids = batch(rank)
    with torch.no_grad():
        logits = model(ids)
    loss = model(ids[:, :-1], labels=ids[:, 1:])
    loss.backward()
    return logits, loss.detach()


def moe_layer():
    """One MoE layer (top-1 of 4 GELU experts with biases, whole) with random weights; its
    router sends every token with positive features to expert 3."""
    layer = MoE(MoEConfig(num_experts=EXPERTS, top_k=1), 8, 16, "gelu", bias=True)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        layer.router.weight.zero_()
        layer.router.weight[3] = 1.0
    return layer


def layer_input(rank):
    return torch.rand(5 + rank, 8, generator=torch.Generator().manual_seed(20 + rank)) + 0.1


def ep_layer(ep):
    """`moe_layer` split over `ep`: this rank's experts, the rest the same."""
    whole = moe_layer()
    layer = MoE(MoEConfig(num_experts=EXPERTS, top_k=1), 8, 16, "gelu", bias=True, ep=ep)
    n = layer.local_experts
    state = {
        key: value[ep.rank * n : (ep.rank + 1) * n] if is_expert(key) else value
        for key, value in whole.state_dict().items()
    }
    layer.load_state_dict(state)
    return layer


def worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    ep = TPGroup.of(dist.group.WORLD)
    results = {}
    for name, (_, _, recompute) in STYLES.items():
        model = Transformer(config(name), seed=SEED, ep=ep, checkpoint_num_layers=recompute)
        logits, loss = run_rank(model, rank)
        grads = {key: param.grad.clone() for key, param in model.named_parameters()}
        results[name] = (logits, loss, grads, tuple(model.moe_losses))
    layer = ep_layer(ep)
    out = layer(layer_input(rank))
    out.output.square().sum().backward()
    grads = {key: param.grad.clone() for key, param in layer.named_parameters()}
    results["all-to-one"] = (out.output.detach(), out.expert_counts, grads)
    torch.save(results, os.path.join(out_dir, f"ep{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ep2_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ep")
    spawn_ranks(worker, 2, str(out))
    return [torch.load(out / f"ep{rank}.pt") for rank in range(2)]


def max_relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def assert_gradients(ranks_grads, single_grads, n):
    """Replicated parameters: the ranks' gradients summed; experts: each rank's, its slice."""
    assert all(sorted(grads) == sorted(single_grads) for grads in ranks_grads)
    for key, grad in single_grads.items():
        if is_expert(key):
            for rank, grads in enumerate(ranks_grads):
                mine = grad[rank * n : (rank + 1) * n]
                assert grads[key].shape == mine.shape, key
                assert max_relative(grads[key], mine) <= 1e-5, (key, rank)
        else:
            assert max_relative(ranks_grads[0][key] + ranks_grads[1][key], grad) <= 1e-5, key


@pytest.mark.parametrize("name", sorted(STYLES))
def test_expert_parallel_2_equals_1(ep2_results, name):
    """Logits, loss (with the auxiliary losses, each rank's tokens' own) and gradients."""
    single = Transformer(config(name), seed=SEED, checkpoint_num_layers=STYLES[name][2])
    for rank in range(2):
        logits, loss = run_rank(single, rank)  # gradients accumulate over the two batches
        ep_logits, ep_loss, _, ep_losses = ep2_results[rank][name]
        ep_losses = MoELosses(*ep_losses)
        assert max_relative(ep_logits, logits) <= 1e-5
        assert abs(ep_loss.item() - loss.item()) <= 1e-5 * abs(loss.item())
        assert torch.equal(ep_losses.expert_share, single.moe_losses.expert_share)
        assert torch.allclose(ep_losses.load_balancing, single.moe_losses.load_balancing)
    grads = {key: param.grad for key, param in single.named_parameters()}
    assert_gradients([ep2_results[rank][name][2] for rank in range(2)], grads, EXPERTS // 2)
    experts = single.blocks[0].mlp.experts.w_in
    assert ep2_results[0][name][2]["layers.0.mlp.experts.w_in"].shape[0] == experts.shape[0] // 2


def test_no_token_is_dropped_when_every_token_goes_to_one_ranks_expert(ep2_results):
    """Every token of both ranks chooses expert 3 (rank 1's): rank 0 sends all its slots and
    receives none, rank 1 runs them all; outputs and gradients are the single layer's."""
    single = moe_layer()
    total = 0.0
    for rank in range(2):
        out = single(layer_input(rank))
        output, counts, _ = ep2_results[rank]["all-to-one"]
        assert counts.tolist() == [0, 0, 0, 5 + rank]  # every slot of this rank's tokens
        assert max_relative(output, out.output.detach()) <= 1e-5
        total = total + out.output.square().sum()
    total.backward()
    grads = {key: param.grad for key, param in single.named_parameters()}
    ranks_grads = [ep2_results[rank]["all-to-one"][2] for rank in range(2)]
    # rank 0's experts saw no slot: zero gradients (not missing ones)
    assert not ranks_grads[0]["experts.w_in"].any()
    assert ranks_grads[1]["experts.w_in"][1].abs().sum() > 0
    assert_gradients(ranks_grads, grads, EXPERTS // 2)


def test_expert_parallel_refuses_what_it_cannot_split():
    ep = TPGroup(None, 0, 3)  # no collective runs before these errors
    with pytest.raises(ValueError, match="moe_num_experts 4 do not split over 3 expert-parallel"):
        MoE(MoEConfig(num_experts=4), 8, 16, "gelu", bias=False, ep=ep)
    tp = TPGroup(None, 0, 2)
    with pytest.raises(ValueError, match="tensor-parallel and expert-parallel ranks at once"):
        MoE(MoEConfig(num_experts=4), 8, 16, "gelu", bias=False, tp=tp, ep=TPGroup(None, 0, 2))
