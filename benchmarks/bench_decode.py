"""Incremental greedy decoding speed: neox's KV-cache loop against Hugging Face `generate`.

Batch 1, a 64-token prompt, 256 new tokens, greedy, with the same weights in both (converted
with neox-convert's key map), on two shapes: bench_model's 6 x 512 with a 50k vocabulary, where
each token is bound by reading the weights once (the output layer alone is 100 MB in fp32), and
the demo's 4 x 256 with a 4k vocabulary, where per-token overheads show. Both runs must produce
the same tokens; the printed ratio is HF time / neox time. neox runs its compiled decoding step
(`generate(..., compile=True)`; the compile, once per shape, is timed apart), or with `--eager`
the plain eager loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from transformers import GPTNeoXForCausalLM

from neox_convert import hf_config, to_hf_state_dict
from neox_model import ModelConfig, Transformer
from neox_train.generation.sampling import generate

from bench_model import CONFIG

SMALL = dataclasses.replace(
    CONFIG, num_layers=4, hidden_size=256, num_attention_heads=8, vocab_size=4096
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="no compiled decoding step")
    args = parser.parse_args()
    for name, config in (("6x512, vocab 50k", CONFIG), ("4x256, vocab 4k", SMALL)):
        compare(name, config, args)


def compare(name: str, config: ModelConfig, args: argparse.Namespace) -> None:
    ours = Transformer(config).eval()
    theirs = GPTNeoXForCausalLM(hf_config(config, None, torch.float32)).eval()
    weights = to_hf_state_dict(ours.state_dict(), torch.float32)
    if hasattr(theirs, "lm_head"):  # transformers 5 names GPTNeoX's embed_out lm_head in memory
        weights["lm_head.weight"] = weights.pop("embed_out.weight")
    theirs.load_state_dict(weights)
    prompt = torch.randint(0, config.vocab_size or 0, (1, args.prompt)).tolist()[0]
    vocab = config.padded_vocab_size
    compile = not args.eager
    start = time.perf_counter()
    generate(ours, prompt, args.new, vocab_size=vocab, compile=compile)  # compiles this shape
    warmup = time.perf_counter() - start
    best = {"neox": float("inf"), "hf": float("inf")}
    for _ in range(args.repeats):
        start = time.perf_counter()
        mine = generate(ours, prompt, args.new, vocab_size=vocab, compile=compile)
        best["neox"] = min(best["neox"], time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            out = theirs.generate(
                torch.tensor([prompt]),
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                pad_token_id=0,
            )
        best["hf"] = min(best["hf"], time.perf_counter() - start)
    same = out[0, args.prompt :].tolist() == mine
    print(
        f"bench_decode {name}: greedy, prompt {args.prompt} + {args.new} new tokens, batch 1, "
        f"{torch.get_num_threads()} threads: neox {'eager' if args.eager else 'compiled'} "
        f"{args.new / best['neox']:,.1f} tokens/s (first call, compiling: {warmup:.1f} s), "
        f"HF generate {args.new / best['hf']:,.1f} tokens/s; neox/HF speed ratio "
        f"{best['hf'] / best['neox']:.2f} (target >= 1.3); same tokens: {same}"
    )


if __name__ == "__main__":
    main()
