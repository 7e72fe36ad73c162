"""Model FLOPs utilisation of `neox train` on one GPU: a ~1.3B model in bf16 at sequence 2048.

Each run is the real command (`neox train`, one worker, DeepSpeed, the token-file data path) on
`configs/1-3B.yml` (24 x 2048, 16 heads, 50k vocabulary) in bf16, with random tokens and no
checkpoint. Four runs: micro batch 8 and 16, each without and with activation checkpointing.
Every step's own figures are read back from metrics.jsonl (`step_mfu`, `step_hfu`,
`step_tflops_per_device`, `step_time_s`); the first `--warmup` steps are left out and the median,
min and max of the rest printed, one JSON line per run. MFU counts model FLOPs (PaLM's 6N +
attention, recomputation never counted); HFU counts the recomputed forward passes too; the peak
is the device's dense bf16 peak by its name (H100 SXM / PCIe / NVL, H200, A100, B200, MI300X;
`--peak-tflops` for any other). The goal is MFU >= 45% on one H100/H200.

Without a GPU it says so and exits 0. `--cpu-check` runs the same four runs on CPU with a
2-layer, 128-wide model and a stated peak, and asserts the plumbing: one record per step, the
warm-up steps excluded, and HFU / MFU equal to the recomputation factor of the config.

On a GPU machine without DeepSpeed, carry a wheel built where DeepSpeed builds:
    pip wheel --no-deps --no-build-isolation "deepspeed>=0.19,<0.20" -w wheels/
then there: pip install --no-deps wheels/deepspeed-*.whl ./packages/neox-* and run this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tokenizers import Tokenizer, models

from neox_data import TokenFileWriter

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 50304
CPU_PEAK_TFLOPS = 1.0  # --cpu-check: a stated peak, so that MFU and HFU exist on a CPU


def make_inputs(root: Path, tokens: int, seq_length: int) -> dict[str, object]:
    """A word-level tokenizer of VOCAB words and a token file of random documents."""
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")).save(str(root / "tok.json"))
    rng = np.random.default_rng(0)
    with TokenFileWriter(root / "data", np.uint16) as writer:
        for _ in range(-(-tokens // (4 * seq_length))):
            writer.add_document(rng.integers(1, VOCAB, 4 * seq_length))
    return {
        "data_path": str(root / "data"),
        "split": "100,0,0",
        "tokenizer_type": "HFTokenizer",
        "vocab_file": str(root / "tok.json"),
    }


def run_config(args: argparse.Namespace, root: Path, micro: int, recompute: bool) -> Path:
    values = yaml.safe_load((ROOT / "configs" / "1-3B.yml").read_text())
    if args.cpu_check:
        values.update(num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=256)
        values["max_position_embeddings"] = 256
    seq = values["seq_length"]
    values.update(
        train_micro_batch_size_per_gpu=micro,
        gradient_accumulation_steps=1,
        train_iters=args.steps,
        eval_iters=0,
        eval_interval=10**6,
        log_interval=1,
        checkpoint_activations=recompute,
        checkpoint_num_layers=1,
        zero_optimization={"stage": 1},
        num_gpus=1,
        log_dir=str(root / "logs"),
        save=None,
        **make_inputs(root, args.steps * micro * (seq + 1), seq),
    )
    values.pop("train_batch_size", None)
    values.pop("fp16", None)  # the file trains in fp16; this measures bf16
    values["bf16"] = {"enabled": not args.cpu_check}  # fp32 on CPU
    peak = CPU_PEAK_TFLOPS if args.cpu_check else args.peak_tflops
    if peak:
        values["peak_tflops"] = peak
    path = root / "run.yml"
    path.write_text(yaml.safe_dump(values))
    return path


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def one_run(args: argparse.Namespace, micro: int, recompute: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        neox = shutil.which("neox")
        command = [neox] if neox else [sys.executable, "-m", "neox"]
        subprocess.run(
            [*command, "train", str(run_config(args, root, micro, recompute))], check=True
        )
        rows = [json.loads(line) for line in (root / "logs" / "metrics.jsonl").open()]
    steps = [r for r in rows if "step_time_s" in r]
    timed = [r for r in steps if r["step"] > args.warmup]
    if not timed:
        raise SystemExit(f"bench_gpu_mfu: no step after the {args.warmup} warm-up steps logged")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "model": "tiny CPU check" if args.cpu_check else "1.3B bf16 seq 2048",
        "micro_batch": micro,
        "activation_checkpointing": recompute,
        "steps_timed": len(timed),
        "warmup_steps_left_out": len(steps) - len(timed),
        "step_time_s": spread([r["step_time_s"] for r in timed]),
        "tflops_per_device": spread([r["step_tflops_per_device"] for r in timed]),
    }
    for key in ("mfu", "hfu"):
        values = [r[f"step_{key}"] for r in timed if f"step_{key}" in r]
        result[key] = spread(values) if values else None
    if args.cpu_check:
        check(args, steps, timed, result)
    return result


def check(args: argparse.Namespace, steps: list[dict], timed: list[dict], result: dict) -> None:
    """--cpu-check: the records the figures come from are the ones they should be."""
    assert [r["step"] for r in steps] == list(range(1, args.steps + 1)), "one record per step"
    assert [r["step"] for r in timed] == list(range(args.warmup + 1, args.steps + 1))
    assert result["warmup_steps_left_out"] == args.warmup
    factors = {round(r["step_hfu"] / r["step_mfu"], 12) for r in timed}
    assert len(factors) == 1, f"HFU / MFU differs between steps: {factors}"
    (factor,) = factors
    if result["activation_checkpointing"]:
        assert factor > 1.0, "recomputation not counted in HFU"
    else:
        assert factor == 1.0, f"HFU differs from MFU without recomputation: {factor}"
    result["hfu_over_mfu"] = factor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out")
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--cpu-check", action="store_true", help="a tiny model on CPU")
    args = parser.parse_args()
    if args.cpu_check and args.steps == parser.get_default("steps"):
        args.steps, args.warmup = 6, 2
    if not args.cpu_check and not torch.cuda.is_available():
        print("bench_gpu_mfu: skipped, no CUDA GPU here (--cpu-check tests the plumbing on CPU)")
        return 0
    for micro in args.micro_batches:
        for recompute in (False, True):
            print("bench_gpu_mfu: " + json.dumps(one_run(args, micro, recompute)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
