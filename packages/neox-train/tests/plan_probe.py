"""One rank of `test_plan.py`'s measurement: for each config set given as a JSON list of lists
of files, build neox's DeepSpeed engine for it (vocabulary 512), train one step on random tokens
and print what this rank holds as one JSON line: its parameters and their bytes, the gradient
bytes after backward (where DeepSpeed leaves them on the parameters), and the bytes the
optimizer keeps (every tensor reachable from it with more than one element, parameters' own
storage and shape-only meta tensors excluded; the scalars left out are step counters).

With a second argument `activations`: build the model as training builds it (its tensor- and
sequence-parallel shard) and print the bytes one forward pass saves for backward instead."""

import gc
import json
import os
import sys

import torch

from neox_train.config.run_config import load_run_config
from neox_train.engine.build import build_engine, build_module
from neox_train.loop.trainer import schedule_for
from neox_train.parallel.distributed import DistEnv, init_distributed
from neox_train.parallel.topology import build_parallel, parallel_dims

VOCAB = 512


def reachable_tensors(obj, seen, found, depth=0):
    if depth > 6 or id(obj) in seen or isinstance(obj, torch.nn.Module):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        found.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            reachable_tensors(value, seen, found, depth + 1)
    elif isinstance(obj, list | tuple):
        for value in obj:
            reachable_tensors(value, seen, found, depth + 1)
    elif type(obj).__module__.split(".")[0] in ("deepspeed", "torch", "neox_train"):
        for value in getattr(obj, "__dict__", {}).values():
            reachable_tensors(value, seen, found, depth + 1)


def optimizer_bytes(engine, params):
    own = {p.untyped_storage().data_ptr() for p in params}
    found = []
    reachable_tensors(engine.optimizer, set(), found)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in found
        if t.numel() > 1 and t.device.type != "meta" and t.untyped_storage().data_ptr() not in own
    }
    return sum(storages.values())


def one_step(engine, run, batch, pipeline):
    ids = torch.randint(0, VOCAB, (batch.micro_batch, run.model.seq_length + 1))
    pairs = [(ids[:, :-1], ids[:, 1:])] * batch.grad_accum
    if pipeline:
        engine.train_batch(data_iter=iter(pairs))
        return None
    inputs, labels = pairs[0]
    loss = engine(inputs, labels=labels)
    engine.backward(loss)
    params = engine.module.parameters()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    engine.step()
    return grads


def measure(files, env, device):
    run = load_run_config(files).run
    batch = run.batch(env.world_size)
    parallel = build_parallel(parallel_dims(run, env.world_size))
    config = run.model.with_vocab(VOCAB)
    engine = build_engine(run, config, parallel, batch, schedule_for(run), device)
    params = list(engine.module.parameters())
    grads = one_step(engine, run, batch, parallel.dims.pipe > 1)
    return {
        "rank": env.rank,
        "stage": parallel.pipe_stage,
        "parameters": sum(p.numel() for p in params),
        "parameter_bytes": sum(p.numel() * p.element_size() for p in params),
        "gradient_bytes": grads,
        "optimizer_bytes": optimizer_bytes(engine, params),
    }


def saved_bytes(model, input_ids):
    """Bytes autograd keeps for backward in one forward pass with labels: every saved tensor's
    storage counted once, the parameters' own left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids, labels=input_ids)
    loss.backward()
    return sum(saved.values())


def activations(files, env, device):
    run = load_run_config(files).run
    parallel = build_parallel(parallel_dims(run, env.world_size))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[run.precision.dtype]
    model = build_module(run, run.model.with_vocab(VOCAB), parallel).to(device, dtype).train()
    shape = (run.training.train_micro_batch_size_per_gpu, run.model.seq_length)
    ids = torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(0))
    return {"rank": env.rank, "activation_bytes": saved_bytes(model, ids.to(device))}


def main():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env = DistEnv.from_environ(os.environ)
    device = init_distributed(env)
    torch.manual_seed(env.rank)
    probe = activations if sys.argv[2:] == ["activations"] else measure
    for files in json.loads(sys.argv[1]):
        print(json.dumps({"files": files, **probe(files, env, device)}), flush=True)
        gc.collect()


if __name__ == "__main__":
    main()
