"""Forward + backward of neox's mixture-of-experts layer against two references on the same
tokens: transformers' Mixtral block (the same router and experts: the function is the same) and a
dense SwiGLU MLP doing the same active FLOPs (top_k x the expert width). Their ratios say what
the routing, the sort-based dropless dispatch and the combine cost.

A Mixtral-shaped layer at small scale: hidden 512, 8 experts 1024 wide, 2 per token, 4096 tokens
(2 x 2048), float32, on the CPU here (the same script runs on a GPU where one is, with --device
cuda). The three alternate over --rounds rounds of --steps calls each; per round the ratio of
times is kept, and the median, min and max printed (> 1: neox's layer is faster). The dense MLP
is a lower bound no dispatch reaches: its ratio is the dispatch overhead.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from neox_model.moe import MoE, MoEConfig

from alternating import ratios, spread, time_rounds

HIDDEN, FFN, EXPERTS, TOP_K = 512, 1024, 8, 2


def ours_and_theirs(device: torch.device) -> tuple[MoE, torch.nn.Module, torch.nn.Module]:
    """neox's layer, transformers' Mixtral block with the same weights, and the dense MLP."""
    torch.manual_seed(0)
    ours = MoE(MoEConfig(EXPERTS, TOP_K, "softmax_topk"), HIDDEN, FFN, "swiglu", bias=False)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.02)
    config = MixtralConfig(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )
    config._experts_implementation = "eager"  # a block built alone: transformers' loop
    theirs = MixtralSparseMoeBlock(config)
    with torch.no_grad():  # neox: w_in [up | gate] (in, out); theirs: gate_up [gate; up] (out, in)
        theirs.gate.weight.copy_(ours.router.weight)
        up, gate = ours.experts.w_in.transpose(1, 2).chunk(2, dim=1)
        theirs.experts.gate_up_proj.copy_(torch.cat([gate, up], dim=1))
        theirs.experts.down_proj.copy_(ours.experts.w_out.transpose(1, 2))
    dense = torch.nn.Sequential(
        torch.nn.Linear(HIDDEN, 2 * TOP_K * FFN, bias=False),  # [up | gate] of top_k x the width
        SwiGLU(),
        torch.nn.Linear(TOP_K * FFN, HIDDEN, bias=False),
    )
    return ours.to(device), theirs.to(device), dense.to(device)


class SwiGLU(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = x.chunk(2, dim=-1)
        return up * torch.nn.functional.silu(gate)


def check_same_function(ours: MoE, theirs: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        mine = ours(x).output
        out = theirs(x)
        reference = out[0] if isinstance(out, tuple) else out
    return float((mine - reference).abs().max())


def fwd_bwd(module: torch.nn.Module, x: torch.Tensor, times: int, moe: bool):  # type: ignore[no-untyped-def]
    """`times` forward + backward passes of `module` on `x`, as a callable."""

    def run() -> None:
        for _ in range(times):
            out = module(x)
            y = out.output if moe else (out[0] if isinstance(out, tuple) else out)
            y.square().mean().backward()
            module.zero_grad(set_to_none=True)
            x.grad = None
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="passes per layer in each round")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    ours, theirs, dense = ours_and_theirs(device)
    x = torch.randn(2, args.tokens // 2, HIDDEN, device=device, requires_grad=True)
    difference = check_same_function(ours.eval(), theirs.eval(), x)
    assert difference < 1e-4, f"the layers compute different functions ({difference})"
    runs = {
        "neox": fwd_bwd(ours.train(), x, args.steps, moe=True),
        "mixtral": fwd_bwd(theirs.train(), x, args.steps, moe=False),
        "dense": fwd_bwd(dense.train(), x, args.steps, moe=False),
    }
    for run in runs.values():  # warm-up
        run()
    seconds = time_rounds(runs, args.rounds)
    tokens = args.tokens * args.steps
    speed = {name: tokens / statistics.median(s) for name, s in seconds.items()}
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    print(
        f"bench_moe: MoE layer fwd+bwd, hidden {HIDDEN}, {EXPERTS} experts x {FFN}, top {TOP_K}, "
        f"{args.tokens} tokens, fp32, {threads}, {args.rounds} alternating rounds of "
        f"{args.steps}: neox MoE {speed['neox']:,.0f} tokens/s; references: transformers "
        f"MixtralSparseMoeBlock (same weights, max |diff| {difference:.1e}) "
        f"{speed['mixtral']:,.0f} tokens/s, dense SwiGLU MLP of the same active FLOPs "
        f"({TOP_K} x {FFN} wide) {speed['dense']:,.0f} tokens/s; neox/Mixtral "
        f"{spread(ratios(seconds['mixtral'], seconds['neox']))}; neox/dense (dispatch "
        f"overhead) {spread(ratios(seconds['dense'], seconds['neox']))}"
    )


if __name__ == "__main__":
    main()
