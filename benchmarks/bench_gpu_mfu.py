"""Model FLOPs utilisation of `neox train` on one GPU: a ~1.3B model in bf16 at sequence 2048.

The run is the real command (`neox train`, one worker, DeepSpeed, the token-file data path) on
`configs/1-3B.yml` (24 x 2048, 16 heads, 50k vocabulary) with bf16, random tokens and no
checkpoint; the TFLOP/s per GPU and the MFU the training log reports (model FLOPs of forward and
backward, with recomputation counted when activations are checkpointed, over the GPU's dense
bf16 peak) are read back from metrics.jsonl and their median after the warm-up steps printed.
The issue's goal is MFU >= 45% on one H100/H200. Without a GPU it prints why and exits 0;
`--cpu-check` runs the same path on CPU with a 2-layer, 128-wide model to test the plumbing.
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

import numpy as np
import torch
import yaml
from tokenizers import Tokenizer, models

from neox_data import TokenFileWriter

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 50304


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


def run_config(args: argparse.Namespace, root: Path) -> Path:
    values = yaml.safe_load((ROOT / "configs" / "1-3B.yml").read_text())
    if args.cpu_check:
        values.update(num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=256)
        values["max_position_embeddings"] = 256
    seq = values["seq_length"]
    values.update(
        train_micro_batch_size_per_gpu=args.micro_batch,
        gradient_accumulation_steps=args.grad_accum,
        train_batch_size=None,
        train_iters=args.steps,
        eval_iters=0,
        eval_interval=10**6,
        log_interval=1,
        checkpoint_activations=args.checkpoint_activations,
        zero_optimization={"stage": 1},
        num_gpus=1,
        log_dir=str(root / "logs"),
        save=None,
        **make_inputs(root, args.steps * args.micro_batch * args.grad_accum * (seq + 1), seq),
    )
    values.pop("train_batch_size")
    values.pop("fp16", None)  # the file trains in fp16; this measures bf16
    values["bf16"] = {"enabled": not args.cpu_check}  # fp32 on CPU
    path = root / "run.yml"
    path.write_text(yaml.safe_dump(values))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the median")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--checkpoint-activations", action="store_true")
    parser.add_argument("--cpu-check", action="store_true", help="a tiny model on CPU")
    args = parser.parse_args()
    if not args.cpu_check and not torch.cuda.is_available():
        print("bench_gpu_mfu: skipped, no CUDA GPU here (--cpu-check tests the plumbing on CPU)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        neox = shutil.which("neox")
        command = [neox] if neox else [sys.executable, "-m", "neox"]
        subprocess.run([*command, "train", str(run_config(args, root))], check=True)
        rows = [json.loads(line) for line in (root / "logs" / "metrics.jsonl").open()]
    timed = [r for r in rows if "tflops_per_device" in r and r["step"] > args.warmup]
    if not timed:
        raise SystemExit(f"bench_gpu_mfu: no step after the {args.warmup} warm-up steps logged")
    tflops = statistics.median(r["tflops_per_device"] for r in timed)
    mfus = [r["mfu"] for r in timed if "mfu" in r]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    mfu = f"MFU {100 * statistics.median(mfus):.1f}%" if mfus else "MFU n/a (no known peak)"
    print(
        f"bench_gpu_mfu: {device}, {'tiny CPU check' if args.cpu_check else '1.3B bf16 seq 2048'}"
        f", micro batch {args.micro_batch} x {args.grad_accum}, activation checkpointing "
        f"{args.checkpoint_activations}: {tflops:.1f} TFLOP/s per device, {mfu} "
        f"(median of {len(timed)} steps; goal >= 45% on H100/H200)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
