"""Forward + backward speed of the neox Transformer against Hugging Face GPTNeoX.

Both models are built from the same architecture (the HF config comes from neox-convert's
mapping), run on the same batches in this process, interleaved, and the ratio of their median
step times is printed: > 1 means neox is faster.
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


def step_time(model: torch.nn.Module, ids: torch.Tensor, hf: bool) -> float:
    start = time.perf_counter()
    logits = model(ids).logits if hf else model(ids)
    F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    config = ModelConfig(
        num_layers=4,
        hidden_size=256,
        num_attention_heads=8,
        seq_length=256,
        pos_emb="rotary",
        rotary_pct=0.25,
        gpt_j_residual=True,
        no_weight_tying=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        vocab_size=4096,
    )
    ours = Transformer(config)
    theirs = GPTNeoXForCausalLM(hf_config(config, 0, torch.float32))
    theirs.config._attn_implementation = "sdpa"
    ids = torch.randint(0, 4096, (args.batch, config.seq_length))
    times: dict[str, list[float]] = {"neox": [], "hf": []}
    for step in range(args.steps + 2):
        for name, model in (("neox", ours), ("hf", theirs)):
            elapsed = step_time(model, ids, hf=name == "hf")
            if step >= 2:  # warm-up steps are not counted
                times[name].append(elapsed)
    neox_s, hf_s = statistics.median(times["neox"]), statistics.median(times["hf"])
    tokens = args.batch * config.seq_length
    print(
        f"bench_model: neox {tokens / neox_s:,.0f} tokens/s, HF GPTNeoX {tokens / hf_s:,.0f} "
        f"tokens/s (fwd+bwd, {torch.get_num_threads()} threads); neox/HF speed ratio "
        f"{hf_s / neox_s:.2f}"
    )


if __name__ == "__main__":
    main()
