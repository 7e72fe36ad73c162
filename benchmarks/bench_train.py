"""Training speed of neox's real loop against a plain PyTorch loop around Hugging Face GPTNeoX.

neox: `neox_train.loop.trainer` as `neox train` runs it, one process (a ZeRO-1 config, which over
one fp32 replica runs as stage 0; AdamW, the token-file data path, gradient clipping at 1.0), on
a 6-layer, 512-wide model at sequence length 512 with a 50k vocabulary. Reference: the loop
users write around `GPTNeoXForCausalLM` of the same shape (built by neox-convert's config map)
and batch: forward, cross-entropy, backward, `clip_grad_norm_(1.0)`, and torch's AdamW with
`fused=True` (the kernel neox steps with), weight decay 0.01, on the same threads. The two
alternate over --rounds rounds of --steps steps each, after one warm-up step each; each round's
ratio of the two's step times is kept, and the median, min and max printed (> 1: neox faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tokenizers import Tokenizer, models
from transformers import GPTNeoXForCausalLM

from neox_convert import hf_config
from neox_data import TokenFileWriter
from neox_train import load_run_config
from neox_train.loop.trainer import setup, train_step
from neox_train.parallel.distributed import DistEnv, init_distributed

from alternating import ratios, spread, time_rounds
from bench_model import CONFIG

BATCH = 2


def make_inputs(root: Path) -> Path:
    """A word-level tokenizer with the model's vocabulary and a token file of random text."""
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, CONFIG.vocab_size or 0)}}
    Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")).save(str(root / "tok.json"))
    rng = np.random.default_rng(0)
    with TokenFileWriter(root / "data", np.int32) as writer:
        for _ in range(64):
            writer.add_document(rng.integers(1, len(vocab), 2048))
    values = {
        **{k: v for k, v in CONFIG.to_dict().items() if k != "vocab_size"},
        "optimizer": {"type": "adam", "params": {"lr": 1e-4}},
        "train_iters": 100,
        "train_micro_batch_size_per_gpu": BATCH,
        "eval_iters": 0,
        "zero_optimization": {"stage": 1},
        "data_path": str(root / "data"),
        "split": "100,0,0",
        "tokenizer_type": "HFTokenizer",
        "vocab_file": str(root / "tok.json"),
    }
    (root / "run.yml").write_text(yaml.safe_dump(values))
    return root / "run.yml"


def neox_step(config: Path):  # type: ignore[no-untyped-def]
    """One optimizer step of the real training loop, as a callable."""
    env = DistEnv(rank=0, local_rank=0, world_size=1, master_addr="127.0.0.1", master_port=None)
    session = setup(load_run_config([config]).run, env, init_distributed(env))
    counter = iter(range(10**9))
    return lambda: train_step(session, next(counter))


def hf_step():  # type: ignore[no-untyped-def]
    """One step of the plain PyTorch loop around GPTNeoXForCausalLM, as a callable."""
    model = GPTNeoXForCausalLM(hf_config(CONFIG, 0, torch.float32)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    ids = torch.randint(1, CONFIG.vocab_size or 0, (BATCH, CONFIG.seq_length + 1))

    def step() -> None:
        logits = model(ids[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def repeated(step, times: int):  # type: ignore[no-untyped-def]
    return lambda: [step() for _ in range(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="steps per run in each round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        steps = {"neox": neox_step(make_inputs(Path(root))), "hf": hf_step()}
        for step in steps.values():  # warm-up: allocators, first kernels
            step()
        seconds = time_rounds({n: repeated(s, args.steps) for n, s in steps.items()}, args.rounds)
    tokens = BATCH * CONFIG.seq_length * args.steps
    speed = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    print(
        f"bench_train: one process, 6x512 seq 512, batch {BATCH}, {torch.get_num_threads()} "
        f"threads, {args.rounds} alternating rounds of {args.steps} steps: neox train "
        f"{speed['neox']:,.0f} tokens/s; reference: plain loop on HF GPTNeoX (same shape, "
        f"fused AdamW, clip 1.0) {speed['hf']:,.0f} tokens/s; neox/reference "
        f"{spread(ratios(seconds['hf'], seconds['neox']))}"
    )


if __name__ == "__main__":
    main()
