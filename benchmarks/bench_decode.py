"""Incremental greedy decoding speed: neox's KV-cache loop against Hugging Face `generate`.

Batch 1, a 64-token prompt, 256 new tokens, greedy, the same weights in every run (converted with
neox-convert's key map), on two shapes: bench_model's 6 x 512 with a 50k vocabulary, where each
token is bound by reading the weights once (the output layer alone is 100 MB in fp32), and the
demo's 4 x 256 with a 4k vocabulary, where per-token overheads show.

The runs, alternating call by call over --rounds rounds (each round's ratio kept; median, min
and max printed):
- neox eager: `generate(model, ...)`, the KV cache growing, no compiler.
- HF eager: `GPTNeoXForCausalLM.generate`, its default dynamic cache.
- neox compiled: `generate(..., compile=True)` (what `compile_decoding: true` runs). Its first
  call, 8 new tokens, compiles and is timed apart; every timed call has another cache length,
  so any recompilation would land in the timed calls.
- HF static + compile: `generate(..., cache_implementation="static")` with the model's forward
  under `torch.compile(fullgraph=True)`, as transformers documents it (its automatic compilation
  runs on GPUs only; mode "reduce-overhead" means CUDA graphs, so on CPU the default mode). It
  compiles once per cache length, so its first call, timed apart, has the timed length.
Every run must produce the same tokens. `--eager` runs the two eager runs only.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from transformers import GPTNeoXForCausalLM

from neox_convert import hf_config, to_hf_state_dict
from neox_model import ModelConfig, Transformer
from neox_train.generation.sampling import generate

from alternating import ratios, spread, time_rounds
from bench_model import CONFIG

SMALL = dataclasses.replace(
    CONFIG, num_layers=4, hidden_size=256, num_attention_heads=8, vocab_size=4096
)
WARMUP_TOKENS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="the eager runs only")
    args = parser.parse_args()
    for name, config in (("6x512, vocab 50k", CONFIG), ("4x256, vocab 4k", SMALL)):
        compare(name, config, args)


def hf_model(ours: Transformer) -> GPTNeoXForCausalLM:
    theirs = GPTNeoXForCausalLM(hf_config(ours.config, None, torch.float32)).eval()
    weights = to_hf_state_dict(ours.state_dict(), torch.float32)
    if hasattr(theirs, "lm_head"):  # transformers 5 names GPTNeoX's embed_out lm_head in memory
        weights["lm_head.weight"] = weights.pop("embed_out.weight")
    theirs.load_state_dict(weights)
    return theirs


def hf_run(model: GPTNeoXForCausalLM, prompt: list[int], new: int, **kwargs) -> list[int]:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            **kwargs,
        )
    return out[0, len(prompt) :].tolist()


Run = Callable[[int], list[int]]  # the new token ids, given how many


def runs(ours: Transformer, prompt: list[int], eager: bool) -> dict[str, Run]:
    """Each run as a callable of the number of new tokens."""
    theirs, vocab = hf_model(ours), ours.config.padded_vocab_size
    out: dict[str, Run] = {
        "neox eager": lambda new: generate(ours, prompt, new, vocab_size=vocab),
        "HF eager": lambda new: hf_run(theirs, prompt, new),
    }
    if not eager:
        compiled = copy.deepcopy(theirs)
        compiled.forward = torch.compile(compiled.forward, fullgraph=True)
        out["neox compiled"] = lambda new: generate(
            ours, prompt, new, vocab_size=vocab, compile=True
        )
        out["HF static + compile"] = lambda new: hf_run(
            compiled, prompt, new, cache_implementation="static"
        )
    return out


def first_call(run: Run, new: int) -> float:
    start = time.perf_counter()
    run(new)
    return time.perf_counter() - start


def compare(name: str, config: ModelConfig, args: argparse.Namespace) -> None:
    torch._dynamo.reset()  # the other shape's compiled steps do not count here
    ours = Transformer(config).eval()
    prompt = torch.randint(0, config.vocab_size or 0, (1, args.prompt)).tolist()[0]
    calls = runs(ours, prompt, args.eager)
    firsts = {}
    if not args.eager:
        firsts["neox compiled"] = (WARMUP_TOKENS, first_call(calls["neox compiled"], WARMUP_TOKENS))
        firsts["HF static + compile"] = (
            args.new,
            first_call(calls["HF static + compile"], args.new),
        )
    tokens: dict[str, list[int]] = {}

    def timed(run_name: str) -> Callable[[], None]:
        return lambda: tokens.__setitem__(run_name, calls[run_name](args.new))

    seconds = time_rounds({n: timed(n) for n in calls}, args.rounds)
    same = len({tuple(t) for t in tokens.values()}) == 1
    speed = ", ".join(f"{n} {args.new / statistics.median(s):,.1f}" for n, s in seconds.items())
    print(
        f"bench_decode {name}: greedy, prompt {args.prompt} + {args.new} new tokens, batch 1, "
        f"{torch.get_num_threads()} threads, {args.rounds} alternating rounds; median tokens/s: "
        f"{speed}; same tokens in every run: {same}"
    )
    print(f"  neox eager / HF eager: {spread(ratios(seconds['HF eager'], seconds['neox eager']))}")
    if not args.eager:
        compiled = ratios(seconds["HF static + compile"], seconds["neox compiled"])
        versus_eager = ratios(seconds["HF eager"], seconds["neox compiled"])
        print(f"  neox compiled / HF static + compile: {spread(compiled)}")
        print(f"  neox compiled / HF eager: {spread(versus_eager)}")
        print(
            "  first calls, not in the figures above: "
            + ", ".join(f"{n} {new} tokens {s:.1f} s" for n, (new, s) in firsts.items())
        )


if __name__ == "__main__":
    main()
