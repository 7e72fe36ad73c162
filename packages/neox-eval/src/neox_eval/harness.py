"""Running lm-eval tasks on a `NeoxLM`: which tasks, lm-eval's `simple_evaluate`, the metrics.

A task is an lm-eval task (or group or tag) name, the path of a task YAML file, or a directory of
task YAML files (every task in it). `include_path` directories add their tasks to the names
lm-eval knows. lm-eval's own task index is built (some seconds) unless every task is a path.
"""

from __future__ import annotations

import contextlib
import difflib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neox_data import Tokenizer
from neox_eval.adapter import NeoxLM
from neox_model import Transformer

if TYPE_CHECKING:  # lm-eval's evaluator and task index load `datasets`: imported when used
    from lm_eval.tasks import TaskManager

Metrics = dict[str, dict[str, float]]  # task -> metric -> value
DEFAULT_BOOTSTRAP_ITERS = 100_000  # lm-eval's: the standard errors of bootstrapped metrics


@dataclass(frozen=True)
class TaskSelection:
    manager: TaskManager  # lm-eval's index of the tasks it can load
    specs: list[str]  # what to load: task names and task YAML files


def resolve_tasks(tasks: Sequence[str], include_path: Sequence[str | Path] = ()) -> TaskSelection:
    """The task specs to load (names, YAML files, and for each directory the tasks it defines)
    and an lm-eval task manager that knows them; an unknown name is an error."""
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ValueError("no tasks given: name lm-eval tasks or task YAML files/directories")
    includes = [Path(p) for p in include_path]
    for path in includes:
        if not path.is_dir():
            raise FileNotFoundError(f"include path {path} is not a directory")
    specs: list[str] = []
    for task in tasks:
        if Path(task).is_dir():
            found = TaskManager(include_path=task, include_defaults=False).all_subtasks
            if not found:
                raise ValueError(f"{task}: no lm-eval task YAML files in this directory")
            includes.append(Path(task))
            specs.extend(found)
        else:
            specs.append(task)
    only_paths = all(Path(task).exists() for task in tasks)
    manager = TaskManager(include_path=includes or None, include_defaults=not only_paths)
    _check_known(manager, specs)
    return TaskSelection(manager, specs)


def _check_known(manager: TaskManager, specs: Sequence[str]) -> None:
    known = set(manager.all_tasks)
    for spec in specs:
        if spec not in known and not Path(spec).is_file():
            close = difflib.get_close_matches(spec, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown lm-eval task {spec!r} (not a task name or a file){hint}")


def run_tasks(
    lm: NeoxLM,
    tasks: TaskSelection,
    *,
    num_fewshot: int | None = None,
    limit: int | None = None,
    bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS,
    log_samples: bool = False,
) -> dict[str, Any] | None:
    """lm-eval's results for the tasks (its `simple_evaluate`), or None on processes that lm-eval
    does not report from (all but the first process of a node)."""
    from lm_eval.evaluator import simple_evaluate

    results: dict[str, Any] | None = simple_evaluate(
        model=lm,
        tasks=tasks.specs,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=tasks.manager,
        bootstrap_iters=bootstrap_iters,
        log_samples=log_samples,
    )
    return results


def task_metrics(results: Mapping[str, Any]) -> Metrics:
    """task -> metric -> value from lm-eval's results: `acc,none` reads as `acc`, another
    filter as `metric/filter`; values that are not numbers (aliases, "N/A") are left out."""
    metrics: Metrics = {}
    for task, values in results["results"].items():
        metrics[task] = {}
        for key, value in values.items():
            name, comma, filter_name = key.partition(",")
            if not comma or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metrics[task][name if filter_name == "none" else f"{name}/{filter_name}"] = float(value)
    return metrics


def evaluate_tasks(
    model: Transformer,
    tokenizer: Tokenizer,
    tasks: list[str],
    *,
    seq_length: int | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 1,
    include_path: Sequence[str | Path] = (),
    bootstrap_iters: int = 0,
) -> Metrics:
    """Evaluate `model` on lm-eval tasks in the middle of training: task -> metric -> value.

    Every tensor-parallel rank must call it. The model is evaluated in eval mode and left in the
    mode it was in; the random states of python, numpy and torch are left as they were. Returns
    the metrics on the processes lm-eval reports from (the first process of each node, so always
    global rank 0) and an empty dict on the others. `bootstrap_iters` 0 skips standard errors."""
    was_training = model.training
    try:
        with _random_states_kept():
            lm = NeoxLM(model, tokenizer, seq_length=seq_length, batch_size=batch_size)
            results = run_tasks(
                lm,
                resolve_tasks(tasks, include_path),
                num_fewshot=num_fewshot,
                limit=limit,
                bootstrap_iters=bootstrap_iters,
            )
    finally:
        model.train(was_training)
    return task_metrics(results) if results is not None else {}


@contextlib.contextmanager
def _random_states_kept() -> Iterator[None]:
    """lm-eval seeds python's, numpy's and torch's global generators; a trainer's runs on."""
    python, numpy = random.getstate(), np.random.get_state()
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
