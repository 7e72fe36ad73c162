"""The whole model at tensor-parallel size 2 (two gloo processes) against size 1."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neox_model import ColumnParallelLinear, RowParallelLinear, TPGroup, Transformer
from neox_model.tensor_parallel import VocabParallelEmbedding

from styles import style

TP_STYLES = ("pythia", "llama", "mistral")
SEED = 9


def ids():
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


def run(model):
    """Logits, loss and gradients of one forward/backward."""
    batch = ids()
    with torch.no_grad():
        logits = model(batch)
    loss = model(batch[:, :-1], labels=batch[:, 1:])
    loss.backward()
    return logits, loss.detach()


def sharding(module, name):
    """(dim, chunks) of a parameter's tensor-parallel split, or None if it is replicated."""
    if isinstance(module, ColumnParallelLinear):
        return 0, module.chunks
    if isinstance(module, RowParallelLinear):
        return (1, 1) if name == "weight" else None
    if isinstance(module, VocabParallelEmbedding):
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
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "tp2.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tp2_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(worker, args=(port, str(out)), nprocs=2, join=True)
    return torch.load(out / "tp2.pt")


def max_relative(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.mark.parametrize("name", TP_STYLES)
def test_tensor_parallel_2_equals_1(tp2_results, name):
    single = Transformer(style(name), seed=SEED)
    logits, loss = run(single)
    tp_logits, tp_loss, tp_grads = tp2_results[name]
    assert max_relative(tp_logits, logits) <= 1e-5
    assert abs(tp_loss.item() - loss.item()) <= 1e-5 * abs(loss.item())
    grads = {n: p.grad for n, p in single.named_parameters()}
    assert sorted(grads) == sorted(tp_grads)
    for key, grad in grads.items():
        assert max_relative(tp_grads[key], grad) <= 1e-5, key
