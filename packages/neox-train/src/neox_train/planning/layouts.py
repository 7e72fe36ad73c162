"""`neox plan --pick-layout`: the layout neox would pick for N GPUs.

Every layout of N GPUs is planned: tensor parallelism over a power of two that divides the
attention heads (and the key/value heads) and stays within a node, times pipeline stages that
divide the rest and are no more than the layers, times data parallelism over what is left; the
config's batch keys and ZeRO stage as given. Of the layouts whose fullest GPU fits in memory,
the fastest by the predicted tokens/s (`prediction`) is picked, and among those within 0.5% of
it the one with the fewest GPUs per model replica (tensor x pipeline), then the fewest tensor
ranks: model parallelism costs communication the FLOP count does not see, so the least that fits
is used (Narayanan et al., 2021, takeaways 1 and 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from neox_model import ParallelDims
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError
from neox_train.planning.plan import Plan, make_plan

TIE = 0.005  # layouts this close to the fastest count as equally fast


def candidate_dims(run: RunConfig, world_size: int, gpus_per_node: int) -> Iterator[ParallelDims]:
    """Every (tensor, pipe, data) over `world_size` GPUs that the model's shape allows."""
    model = run.model
    heads = (model.num_attention_heads, model.num_kv_heads or model.num_attention_heads)
    tensor = 1
    while tensor <= min(gpus_per_node, world_size):
        if world_size % tensor == 0 and all(h % tensor == 0 for h in heads):
            rest = world_size // tensor
            for pipe in range(1, min(rest, model.num_layers) + 1):
                if rest % pipe == 0:
                    yield ParallelDims(tensor=tensor, pipe=pipe, data=rest // pipe)
        tensor *= 2


def with_dims(run: RunConfig, dims: ParallelDims) -> RunConfig:
    """`run` with its model- and pipeline-parallel sizes set to those of `dims`."""
    pipe = dims.pipe if dims.pipe > 1 else min(run.parallel.pipe_parallel_size, 1)
    parallel = dataclasses.replace(
        run.parallel, model_parallel_size=dims.tensor, pipe_parallel_size=pipe
    )
    return dataclasses.replace(run, parallel=parallel)


def pick_layout(
    run: RunConfig,
    vocab_size: int,
    world_size: int,
    gpu_memory: int,
    gpus_per_node: int,
    gpu: str,
    achievable: float,
) -> tuple[Plan | None, list[Plan]]:
    """(the picked plan, or None when no layout fits; every layout's plan, fastest first)."""
    plans = []
    for dims in candidate_dims(run, world_size, gpus_per_node):
        try:
            candidate = with_dims(run, dims)
            plans.append(make_plan(candidate, vocab_size, world_size, gpu_memory, gpu, achievable))
        except (ConfigError, ValueError):  # a batch or a rule this layout cannot meet
            continue
    plans.sort(key=lambda plan: -plan.speed.tokens_per_second)
    fitting = [plan for plan in plans if plan.fits]
    if not fitting:
        return None, plans
    fastest = fitting[0].speed.tokens_per_second
    close = [p for p in fitting if p.speed.tokens_per_second >= (1 - TIE) * fastest]
    best = min(close, key=lambda p: (p.layout.tensor * p.layout.pipe, p.layout.tensor))
    return best, plans


def describe_pick(picked: Plan | None, plans: list[Plan], world_size: int, shown: int = 8) -> str:
    """The lines `neox plan --pick-layout` prints: the layouts, then the pick."""
    lines = [f"layouts of {world_size} GPUs (fastest first; tensor x pipeline x data):"]
    for plan in plans[:shown]:
        dims, speed = plan.layout, plan.speed
        memory = plan.heaviest.total / 2**30
        mark = "  <- picked" if plan is picked else ""
        lines.append(
            f"  {dims.tensor:>2} x {dims.pipe:>2} x {dims.data:>4}: "
            f"{speed.tokens_per_second:>12,.0f} tokens/s, MFU {speed.mfu:.1%}, "
            f"{memory:8.2f} GiB on the fullest GPU"
            + ("" if plan.fits else " (does not fit)")
            + mark
        )
    if len(plans) > shown:
        lines.append(f"  ... and {len(plans) - shown} more")
    if picked is None:
        lines.append("no layout fits: raise the ZeRO stage, lower the micro-batch or add GPUs")
    else:
        d = picked.layout
        lines.append(
            f"picked: model_parallel_size {d.tensor}, pipe_parallel_size {d.pipe} "
            f"({d.data} data-parallel replicas)"
        )
    return "\n".join(lines)
