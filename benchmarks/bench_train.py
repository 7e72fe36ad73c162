"""Training speed of neox's real loop against a plain PyTorch loop around Hugging Face GPTNeoX.

neox: `neox_train.loop.trainer` as `neox train` runs it, one process (a ZeRO-1 config, which over
one fp32 replica runs as stage 0; AdamW, the token-file data path), on a 6-layer, 512-wide model at
sequence length 512 with a 50k vocabulary. Reference: `GPTNeoXForCausalLM` of the same shape with
torch's AdamW (its default, per-tensor implementation) on the same batch size, forward + backward
+ step. A second reference runs the same loop with torch's fused AdamW, which neox uses: it
shows how much of the ratio is the optimizer. The runs are interleaved step by step and timed
after a warm-up step; ratios of median step times are printed (> 1: neox is faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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


def hf_step(fused: bool | None = None):  # type: ignore[no-untyped-def]
    """One step of a plain PyTorch loop around GPTNeoXForCausalLM, as a callable."""
    model = GPTNeoXForCausalLM(hf_config(CONFIG, 0, torch.float32)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    ids = torch.randint(1, CONFIG.vocab_size or 0, (BATCH, CONFIG.seq_length + 1))

    def step() -> None:
        logits = model(ids[:, :-1]).logits
        F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        steps = {
            "neox": neox_step(make_inputs(Path(root))),
            "hf": hf_step(),
            "hf_fused": hf_step(fused=True),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for index in range(args.steps + 1):  # interleaved, so that load hits both alike
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                if index:  # the first step warms up
                    times[name].append(time.perf_counter() - start)
    neox_s, hf_s, fused_s = (statistics.median(times[n]) for n in ("neox", "hf", "hf_fused"))
    tokens = BATCH * CONFIG.seq_length
    print(
        f"bench_train: one process, 6x512 seq 512, batch {BATCH}, {torch.get_num_threads()} "
        f"threads: neox train {tokens / neox_s:,.0f} tokens/s, plain loop on HF GPTNeoX "
        f"{tokens / hf_s:,.0f} tokens/s; neox/HF speed ratio {hf_s / neox_s:.2f} (target >= 1.0); "
        f"the plain loop with fused AdamW {tokens / fused_s:,.0f} tokens/s, neox/that "
        f"{fused_s / neox_s:.2f}"
    )


if __name__ == "__main__":
    main()
