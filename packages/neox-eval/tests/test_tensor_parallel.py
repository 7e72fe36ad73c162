"""The adapter and `evaluate_tasks` at tensor-parallel size 2 (two gloo processes, each holding
its shard of a pipeline-layout checkpoint) against size 1: the same numbers per document."""

import json
import os

import pytest
import torch
import torch.distributed as dist

from neox_eval import NeoxLM, evaluate_tasks, load_checkpoint, resolve_tasks, run_tasks
from neox_model import TPGroup
from neox_testing import spawn_ranks

from conftest import TASKS, make_checkpoint

LIMIT = 4


def evaluate(loaded, task_files):
    """(per-document responses of every task, evaluate_tasks' metrics)."""
    lm = NeoxLM(loaded.model, loaded.tokenizer, batch_size=2)
    results = run_tasks(lm, resolve_tasks(task_files), limit=LIMIT, log_samples=True)
    samples = None
    if results is not None:
        samples = {t: [s["filtered_resps"] for s in results["samples"][t]] for t in TASKS}
    metrics = evaluate_tasks(loaded.model, loaded.tokenizer, task_files, limit=LIMIT, batch_size=2)
    return samples, metrics


def worker(rank, port, checkpoint, task_files, out_dir):
    os.environ["LOCAL_RANK"] = str(rank)  # as a launcher sets it: lm-eval reports from 0
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    tp = TPGroup.of(None)
    loaded = load_checkpoint(checkpoint, tp=tp)
    assert loaded.model.embed_in.weight.shape[0] == loaded.model.vocab // 2  # a shard
    samples, metrics = evaluate(loaded, task_files)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as stream:
        json.dump({"samples": samples, "metrics": metrics}, stream)
    dist.destroy_process_group()


def numbers(value):
    """Every number in a nested response, flattened (booleans as 0/1)."""
    if isinstance(value, list | tuple):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, int | float) else []


def test_tensor_parallel_2_gives_the_numbers_of_size_1(tmp_path, loaded, tasks):
    task_files = [str(tasks[t]) for t in TASKS]
    single_samples, single_metrics = evaluate(loaded, task_files)
    make_checkpoint(tmp_path / "pipeline", layout="pipeline")
    spawn_ranks(worker, 2, str(tmp_path / "pipeline"), task_files, str(tmp_path))
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1 == {"samples": None, "metrics": {}}  # lm-eval reports from rank 0 only
    for task in TASKS:
        ours, theirs = single_samples[task], rank0["samples"][task]
        assert len(ours) == len(theirs) == LIMIT
        if task == "neox_gen":
            assert theirs == ours
        else:
            assert numbers(theirs) == pytest.approx(numbers(ours), abs=1e-4)
        for metric, value in single_metrics[task].items():
            assert rank0["metrics"][task][metric] == pytest.approx(value, rel=1e-5)
