"""Training-step speed of the neox Transformer against Hugging Face GPTNeoX, same shape.

A 6-layer, 512-wide, 8-head Pythia-style model at sequence length 512: forward, backward and an
AdamW step, on the same batches in this process, the two models interleaved step by step. The
ratio of median step times is printed: > 1 means neox is faster. The HF config comes from
neox-convert's mapping, so both compute the same function.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from neox_convert import hf_config
from neox_model import ModelConfig, Transformer

CONFIG = ModelConfig(
    num_layers=6,
    hidden_size=512,
    num_attention_heads=8,
    seq_length=512,
    pos_emb="rotary",
    rotary_pct=0.25,
    gpt_j_residual=True,
    no_weight_tying=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    vocab_size=50277,
)


def neox_loss(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    return model(ids[:, :-1], labels=ids[:, 1:])


def hf_loss(model: GPTNeoXForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def step_time(loss_fn, model, optimizer, ids) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    loss_fn(model, ids).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    ours = Transformer(CONFIG).train()
    theirs = GPTNeoXForCausalLM(hf_config(CONFIG, 0, torch.float32)).train()
    runs = {
        "neox": (neox_loss, ours, torch.optim.AdamW(ours.parameters(), lr=1e-4)),
        "hf": (hf_loss, theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4)),
    }
    ids = torch.randint(0, 50277, (args.batch, CONFIG.seq_length + 1))
    times: dict[str, list[float]] = {"neox": [], "hf": []}
    for step in range(args.steps + 1):
        for name, (loss_fn, model, optimizer) in runs.items():
            elapsed = step_time(loss_fn, model, optimizer, ids)
            if step > 0:  # the first step warms up allocators and kernels
                times[name].append(elapsed)
    neox_s, hf_s = statistics.median(times["neox"]), statistics.median(times["hf"])
    tokens = args.batch * CONFIG.seq_length
    print(
        f"bench_model: train step (fwd+bwd+AdamW), 6x512 seq 512, {torch.get_num_threads()} "
        f"threads: neox {tokens / neox_s:,.0f} tokens/s, HF GPTNeoX {tokens / hf_s:,.0f} "
        f"tokens/s; neox/HF speed ratio {hf_s / neox_s:.2f} (target >= 1.0)"
    )


if __name__ == "__main__":
    main()
