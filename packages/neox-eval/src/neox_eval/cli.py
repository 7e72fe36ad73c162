"""`neox-eval`: evaluate a neox checkpoint with EleutherAI's lm-evaluation-harness.

    neox-eval CONFIG... --eval_tasks t1 t2 [--num_fewshot N] [--limit N] [--batch_size N]
                        [--output_path results.json] [--checkpoint DIR] [--include_path DIR]

The checkpoint is `--checkpoint` or the configs' `load` (a run directory or a step directory).
Tasks are lm-eval task names, task YAML files or directories of them. Results are printed as
lm-eval's table and written as JSON. Under a launcher (RANK/WORLD_SIZE in the environment) the
model is tensor-parallel over all the processes; the first prints and writes. `--log_samples`
adds each document's requests and responses to the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.utils import handle_non_serializable, make_table

from neox_eval.adapter import NeoxLM
from neox_eval.checkpoint import load_checkpoint, read_config
from neox_eval.harness import resolve_tasks, run_tasks
from neox_eval.process_group import LaunchEnv, join, leave
from neox_model.checkpoint import CheckpointError

# errors a user causes (a bad flag value, config, checkpoint or task): one line, exit status 2
USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neox-eval", description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", help="run config files (`load` names the checkpoint)")
    parser.add_argument("--eval_tasks", nargs="+", required=True, help="task names, YAMLs, dirs")
    parser.add_argument("--checkpoint", help="run or step directory (instead of `load`)")
    parser.add_argument("--num_fewshot", type=int, help="few-shot examples (default: the task's)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N documents per task")
    parser.add_argument("--batch_size", type=int, help="default: train_micro_batch_size_per_gpu")
    parser.add_argument("--output_path", type=Path, help="write the results here as JSON")
    parser.add_argument("--include_path", nargs="+", default=[], help="more task YAML dirs")
    parser.add_argument("--log_samples", action="store_true", help="per-document outputs in JSON")
    parser.add_argument("--bootstrap_iters", type=int, default=100_000, help="0: no stderrs")
    parser.add_argument("--seed", type=int, default=1234, help="for sampled generation")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = LaunchEnv.from_environ(os.environ)
    logging.basicConfig(level=logging.WARNING, format="[neox-eval] %(message)s", force=True)
    try:
        _evaluate(args, env)
    except USER_ERRORS as err:
        if args.debug:
            raise
        if env.rank == 0:
            print(f"neox-eval: error: {err}", file=sys.stderr)
        return 2
    return 0


def _evaluate(args: argparse.Namespace, env: LaunchEnv) -> None:
    given = read_config(args.configs)
    checkpoint = args.checkpoint or given.get("load")
    if not checkpoint:
        raise ValueError("no checkpoint: pass --checkpoint DIR or set `load` in a config")
    tasks = resolve_tasks(args.eval_tasks, args.include_path)  # fails before loading a model
    tp = join(env)
    try:
        loaded = load_checkpoint(checkpoint, tp=tp, overrides=given)
        lm = NeoxLM(
            loaded.model.to(env.device()[0]),
            loaded.tokenizer,
            seq_length=loaded.seq_length,
            batch_size=args.batch_size or loaded.micro_batch_size or 1,
            seed=args.seed,
        )
        results = run_tasks(
            lm,
            tasks,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            bootstrap_iters=args.bootstrap_iters,
            log_samples=args.log_samples,
        )
    finally:
        leave(tp)
    if env.rank == 0 and results is not None:
        _report(results, args.output_path)


def _report(results: dict[str, Any], output_path: Path | None) -> None:
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    if output_path is not None:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
        output_path.write_text(text + "\n")
        print(f"results written to {output_path}")
