"""The whole model at tensor-parallel size 2 (two gloo processes) against size 1, also with
sequence parallelism (the Transformer, activation checkpointing and the pipeline's layers)."""

import os

import pytest
import torch
import torch.distributed as dist

from neox_model import (
    ColumnParallelLinear,
    RowParallelLinear,
    TPGroup,
    Transformer,
    pipeline_loss,
    pipeline_specs,
)
from neox_model.moe import Experts
from neox_model.norms import ShardedRMSNorm
from neox_model.tensor_parallel import VocabParallelEmbedding
from neox_testing import spawn_ranks, style

TP_STYLES = ("pythia", "llama", "mistral", "llama3", "qwen2", "qwen3", "olmo2", "gemma2")
# with tied output layers, ALiBi, learned positions (a replicated weight), ScaleNorm
SP_STYLES = (*TP_STYLES, "alibi", "learned", "sinusoidal")
# tied (llama3, gemma2: soft-capped logits) and untied output layers; learned positions beside a
# tied embedding
PIPE_STYLES = (*TP_STYLES, "learned")
SEED = 9
# mixtures of experts, the experts split over the ranks (GPT-NeoX's layout): Mixtral's router
# with both auxiliary losses on every layer; Qwen2-MoE's (not renormalised) with a shared expert
# on layer 0 only; GPT-NeoX's Sinkhorn router with one expert per token
MOE_STYLES = {
    "moe-mixtral": (
        "llama",
        dict(
            moe_num_experts=4,
            moe_top_k=2,
            moe_router_type="softmax_topk",
            moe_loss_coeff=0.1,
            moe_z_loss_coeff=0.01,
        ),
    ),
    "moe-qwen": (
        "qwen2",
        dict(
            moe_num_experts=4,
            moe_top_k=2,
            moe_router_type="softmax_topk",
            moe_normalize_topk=False,
            moe_expert_interval=2,
            moe_ffn_hidden_size=20,
            moe_shared_expert_intermediate_size=40,
        ),
    ),
    "moe-sinkhorn": ("pythia", dict(moe_num_experts=2, moe_top_k=1)),
}


def moe_style(name):
    base, overrides = MOE_STYLES[name]
    return style(base, **overrides)


def ids():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


def masked_labels():
    """Next-token labels of `ids()` with about half of them ignored (-100)."""
    labels = ids()[:, 1:].clone()
    labels[torch.rand(labels.shape, generator=torch.Generator().manual_seed(2)) < 0.5] = -100
    return labels


def run(model, labels=None):
    """Logits, loss and gradients of one forward/backward."""
    batch = ids()
    with torch.no_grad():
        logits = model(batch)
    loss = model(batch[:, :-1], labels=batch[:, 1:] if labels is None else labels)
    loss.backward()
    return logits, loss.detach()


def sp_ids():
    """12 input positions (a multiple of the tensor-parallel size) and their next tokens."""
    return torch.randint(0, 64, (2, 13), generator=torch.Generator().manual_seed(3))


def run_sp(model):
    """Logits, loss and gradients of one forward/backward on `sp_ids()`."""
    batch = sp_ids()
    with torch.no_grad():
        logits = model(batch[:, :-1])
    loss = model(batch[:, :-1], labels=batch[:, 1:])
    loss.backward()
    return logits, loss.detach()


def run_pipeline_layers(config, tp):
    """Loss and full gradients of the pipeline's layers, called in sequence, under sequence
    parallelism: each layer's output is this rank's part of the sequence."""
    specs = pipeline_specs(config, tp, SEED, sequence_parallel=True)
    layers = [layer.cls(*layer.args) for layer in specs]
    batch = sp_ids()
    x = batch[:, :-1]
    for layer in layers:
        x = layer(x)
    assert x.shape == (2, 12, 64 // tp.size)  # logits: the whole sequence, a vocabulary shard
    loss = pipeline_loss(tp)(x, batch[:, 1:])
    loss.backward()
    grads = {}
    for layer in layers:  # a tied output's weight: its gradient adds to the embedding's
        for key, grad in full_gradients(layer, tp).items():
            name = layer.model_name(key)
            grads[name] = grads[name] + grad if name in grads else grad
    return loss.detach(), grads


def sharding(module, name):
    """(dim, chunks) of a parameter's tensor-parallel split, or None if it is replicated."""
    if isinstance(module, ColumnParallelLinear):
        return 0, module.chunks
    if isinstance(module, RowParallelLinear):
        return (1, 1) if name == "weight" else None
    if isinstance(module, VocabParallelEmbedding | ShardedRMSNorm):
        return 0, 1
    if isinstance(module, Experts) and module.sharded_experts:
        return 0, 1
    return None


def unshard(pieces, dim, chunks):
    """The full tensor from every rank's shard (the inverse of neox_model's shard)."""
    blocks = [p.chunk(chunks, dim) for p in pieces]
    return torch.cat([torch.cat([b[c] for b in blocks], dim) for c in range(chunks)], dim)


def full_gradients(model, tp):
    grads = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            key = f"{module_name}.{name}" if module_name else name
            split = sharding(module, name)
            if split is None:
                grads[key] = param.grad.clone()
                continue
            pieces = [torch.empty_like(param.grad) for _ in range(tp.size)]
            dist.all_gather(pieces, param.grad.contiguous())
            grads[key] = unshard(pieces, *split)
    return grads


def worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    tp = TPGroup.of(dist.group.WORLD)
    results = {}
    for name in TP_STYLES:
        model = Transformer(style(name), tp=tp, seed=SEED)
        logits, loss = run(model)
        results[name] = (logits, loss, full_gradients(model, tp))
    for name in MOE_STYLES:
        model = Transformer(moe_style(name), tp=tp, seed=SEED)
        logits, loss = run(model)
        results[name] = (logits, loss, full_gradients(model, tp))
    model = Transformer(style("llama"), tp=tp, seed=SEED)
    _, loss = run(model, masked_labels())
    results["masked"] = (None, loss, full_gradients(model, tp))
    for name in SP_STYLES:
        model = Transformer(style(name), tp=tp, seed=SEED, sequence_parallel=True)
        logits, loss = run_sp(model)
        results[f"sp-{name}"] = (logits, loss, full_gradients(model, tp))
    model = Transformer(
        style("pythia"), tp=tp, seed=SEED, sequence_parallel=True, checkpoint_num_layers=1
    )
    results["sp-checkpointed"] = (*run_sp(model), full_gradients(model, tp))
    model = Transformer(style("llama"), tp=tp, seed=SEED, sequence_parallel=True)
    model.compile_blocks()
    results["sp-compiled"] = (*run_sp(model), full_gradients(model, tp))
    for name in PIPE_STYLES:
        loss, grads = run_pipeline_layers(style(name), tp)
        results[f"sp-pipeline-{name}"] = (None, loss, grads)
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "tp2.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tp2_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp")
    spawn_ranks(worker, 2, str(out))
    return torch.load(out / "tp2.pt")


def max_relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def assert_same(result, logits, loss, single):
    """A tensor-parallel (logits, loss, full gradients) equals the single process's, fp32."""
    tp_logits, tp_loss, tp_grads = result
    if tp_logits is not None:
        assert max_relative(tp_logits, logits) <= 1e-5
    assert abs(tp_loss.item() - loss.item()) <= 1e-5 * abs(loss.item())
    grads = {n: p.grad for n, p in single.named_parameters()}
    assert sorted(grads) == sorted(tp_grads)
    for key, grad in grads.items():
        assert max_relative(tp_grads[key], grad) <= 1e-5, key


@pytest.mark.parametrize("name", TP_STYLES)
def test_tensor_parallel_2_equals_1(tp2_results, name):
    single = Transformer(style(name), seed=SEED)
    assert_same(tp2_results[name], *run(single), single)


@pytest.mark.parametrize("name", sorted(MOE_STYLES))
def test_tensor_parallel_2_with_the_experts_split_equals_1(tp2_results, name):
    """Logits, the loss with its auxiliary terms, and every gradient (the experts' joined from
    their two halves; the router and shared expert whole on each rank)."""
    single = Transformer(moe_style(name), seed=SEED)
    assert_same(tp2_results[name], *run(single), single)
    experts = single.blocks[0].mlp.experts
    assert experts.w_in.shape[0] == single.config.moe_num_experts  # the whole model's


@pytest.mark.parametrize("name", SP_STYLES)
def test_sequence_parallel_2_equals_1(tp2_results, name):
    """Logits, loss and every gradient (norms and row biases summed over the group)."""
    single = Transformer(style(name), seed=SEED)
    assert_same(tp2_results[f"sp-{name}"], *run_sp(single), single)


def test_sequence_parallel_2_with_activation_checkpointing_equals_1(tp2_results):
    single = Transformer(style("pythia"), seed=SEED)
    assert_same(tp2_results["sp-checkpointed"], *run_sp(single), single)


def test_sequence_parallel_2_with_compiled_blocks_equals_1(tp2_results):
    single = Transformer(style("llama"), seed=SEED)
    assert_same(tp2_results["sp-compiled"], *run_sp(single), single)


@pytest.mark.parametrize("name", PIPE_STYLES)
def test_sequence_parallel_pipeline_layers_equal_the_single_model(tp2_results, name):
    single = Transformer(style(name), seed=SEED)
    _, loss = run_sp(single)
    assert_same(tp2_results[f"sp-pipeline-{name}"], None, loss, single)


def test_sequence_parallel_at_tensor_parallel_1_changes_nothing():
    plain = Transformer(style("pythia"), seed=SEED)
    flagged = Transformer(style("pythia"), seed=SEED, sequence_parallel=True)
    assert not flagged.sequence_parallel
    (logits, loss), (flag_logits, flag_loss) = run(plain), run(flagged)
    assert torch.equal(logits, flag_logits) and torch.equal(loss, flag_loss)
    for (name, param), other in zip(plain.named_parameters(), flagged.parameters(), strict=True):
        assert torch.equal(param.grad, other.grad), name


def test_sequence_parallel_refuses_what_it_cannot_split():
    tp = TPGroup(None, 0, 2)  # no collective runs before these errors
    with pytest.raises(ValueError, match=r"seq_length \(13\).*tensor-parallel size \(2\)"):
        Transformer(style("llama", seq_length=13), tp=tp, sequence_parallel=True)
    model = Transformer(style("llama"), tp=tp, sequence_parallel=True)
    with pytest.raises(ValueError, match="input has 11 tokens: give a length that is a multiple"):
        model(ids()[:, :11])
    with pytest.raises(ValueError, match="KV cache needs a model built without sequence_parallel"):
        model(ids()[:, :4], cache=model.new_cache(2))


def test_tensor_parallel_2_masked_loss_equals_1(tp2_results):
    single = Transformer(style("llama"), seed=SEED)
    labels = masked_labels()
    assert 0 < int((labels == -100).sum()) < labels.numel()
    _, loss = run(single, labels)
    _, tp_loss, tp_grads = tp2_results["masked"]
    assert abs(tp_loss.item() - loss.item()) <= 1e-5 * abs(loss.item())
    for key, param in single.named_parameters():
        assert max_relative(tp_grads[key], param.grad) <= 1e-5, key
