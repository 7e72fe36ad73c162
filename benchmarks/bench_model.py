"""Training-step speed of the neox Transformer against Hugging Face GPTNeoX, same shape.

A 6-layer, 512-wide, 8-head Pythia-style model at sequence length 512: forward, backward and an
AdamW step (torch's default AdamW for both), on the same batches in this process, after one
warm-up step each. The two alternate over --rounds rounds of --steps steps each; each round's
ratio of the two's times is kept, and the median, min and max printed (> 1: neox is faster).
The HF config comes from neox-convert's mapping, so both compute the same function.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from neox_convert import hf_config
from neox_model import ModelConfig, Transformer

from alternating import ratios, spread, time_rounds

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


def steps(loss_fn, model, optimizer, ids, times: int):  # type: ignore[no-untyped-def]
    """`times` training steps on `ids`, as a callable."""

    def run() -> None:
        for _ in range(times):
            loss_fn(model, ids).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="steps per model in each round")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    ours = Transformer(CONFIG).train()
    theirs = GPTNeoXForCausalLM(hf_config(CONFIG, 0, torch.float32)).train()
    ids = torch.randint(0, 50277, (args.batch, CONFIG.seq_length + 1))
    runs = {
        "neox": (neox_loss, ours, torch.optim.AdamW(ours.parameters(), lr=1e-4)),
        "hf": (hf_loss, theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4)),
    }
    for run in runs.values():  # warm-up: allocators, first kernels
        steps(*run, ids, 1)()
    seconds = time_rounds({n: steps(*r, ids, args.steps) for n, r in runs.items()}, args.rounds)
    tokens = args.batch * CONFIG.seq_length * args.steps
    speed = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    print(
        f"bench_model: train step (fwd+bwd+AdamW), 6x512 seq 512, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds of {args.steps} "
        f"steps: neox Transformer {speed['neox']:,.0f} tokens/s; reference: HF GPTNeoX "
        f"(same config, same optimizer) {speed['hf']:,.0f} tokens/s; neox/reference "
        f"{spread(ratios(seconds['hf'], seconds['neox']))}"
    )


if __name__ == "__main__":
    main()
