"""`neox plan`: what a run will hold in each GPU's memory and compute per step, from the config
alone. The model is built on the meta device (shapes, no storage), split as the run splits it:
its tensor-parallel shard (rank 0's; every rank's is the same size) and, with a pipeline, the
stages DeepSpeed's partitioning gives (`pipe_partition_method`). Bytes per stage come from
`memory_model`; FLOPs from `neox_train.monitoring.flops` (the model FLOPs MFU counts, and the
hardware FLOPs with recomputation); step time, tokens/s and MFU on a named GPU from
`prediction`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from neox_model import (
    ModelConfig,
    ParallelDims,
    TPGroup,
    Transformer,
    count_parameters,
    pipeline_layer,
    pipeline_specs,
)
from neox_train.config.batch import BatchLayout
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError
from neox_train.engine.deepspeed_config import zero_stage
from neox_train.monitoring.flops import StepFlops, step_flops
from neox_train.parallel.topology import parallel_dims
from neox_train.planning.memory_model import (
    ModelStates,
    Tokens,
    Training,
    block_activation_bytes,
    checkpoint_input_bytes,
    embedding_activation_bytes,
    head_activation_bytes,
    model_state_bytes,
)
from neox_train.planning.prediction import (
    ACHIEVABLE,
    DEFAULT_GPU,
    Prediction,
    describe_prediction,
    predict,
)

GIB = 2**30
MOMENTS = {"adam": 2, "cpu_adam": 2, "lion": 1}


@dataclass(frozen=True)
class Stage:
    """One pipeline stage (the whole model without a pipeline), on one GPU."""

    index: int
    blocks: int  # transformer layers on this stage
    parameters: int  # this GPU's share: its tensor-parallel shard of the stage
    states: ModelStates
    saved_activations: int  # bytes kept for backward by the micro-batches in flight
    recomputed_activations: int  # bytes of the one chunk a checkpointed backward recomputes
    first: bool
    last: bool

    @property
    def activations(self) -> int:
        return self.saved_activations + self.recomputed_activations

    @property
    def total(self) -> int:
        return self.states.on_gpu + self.activations


@dataclass(frozen=True)
class Plan:
    config: ModelConfig  # with the vocabulary the plan assumed
    parameters: int  # the whole model
    layout: ParallelDims
    batch: BatchLayout
    stages: tuple[Stage, ...]
    flops: StepFlops  # of one optimizer step, all GPUs together
    gpu_memory: int | None  # bytes per GPU, when known
    speed: Prediction
    active_parameters: int  # those one token passes through (a mixture of experts': top_k)

    @property
    def tokens_per_step(self) -> int:
        return self.batch.global_batch * self.config.seq_length

    @property
    def heaviest(self) -> Stage:
        return max(self.stages, key=lambda stage: stage.total)

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory is None else self.heaviest.total <= self.gpu_memory


def make_plan(
    run: RunConfig,
    vocab_size: int,
    world_size: int,
    gpu_memory: int | None,
    gpu: str = DEFAULT_GPU,
    achievable: float = ACHIEVABLE,
) -> Plan:
    """The plan of `run` on `world_size` GPUs named `gpu` (raises ConfigError for an impossible
    layout)."""
    layout = parallel_dims(run, world_size)
    batch = run.batch(world_size)
    config = run.model.with_vocab(vocab_size)
    layers = layer_parameters(
        config, layout.tensor, pipeline=layout.pipe > 1, expert_parallel=layout.expert
    )
    bounds = partition(layers, layout.pipe, run.parallel.pipe_partition_method)
    stages = tuple(
        _stage(run, config, layout, batch, layers, bounds, index) for index in range(layout.pipe)
    )
    vocab = config.padded_vocab(layout.tensor)
    flops = step_flops(config, batch.global_batch, vocab, run.training.checkpoint_activations)
    total = count_parameters(config, layout.tensor)
    active = count_parameters(config, layout.tensor, active=True)
    tokens = batch.global_batch * config.seq_length
    speed = predict(flops, layout, batch, tokens, gpu, achievable)
    return Plan(config, total, layout, batch, stages, flops, gpu_memory, speed, active)


def layer_parameters(
    config: ModelConfig, tensor_parallel: int, pipeline: bool = True, expert_parallel: int = 1
) -> list[tuple[str, int]]:
    """(pipeline layer class, parameters on one tensor-parallel (or expert-parallel) rank) of
    every layer in order: embedding, blocks, final norm, output layer. A tied output layer holds
    a copy of the embedding (`TiedOutputPipe`), with its own optimizer state, in a pipeline
    only: without one (`pipeline` false) the model's one embedding is counted once, in the first
    layer."""
    tp = TPGroup(None, 0, tensor_parallel)
    ep = TPGroup(None, 0, expert_parallel) if expert_parallel > 1 else None
    with torch.device("meta"):
        model = Transformer(config, tp=tp, ep=ep)
    specs = pipeline_specs(config, tp, 0)
    counts = [0] * len(specs)
    for name, param in model.named_parameters():
        counts[pipeline_layer(name, config)] += param.numel()
        if pipeline and specs[-1].tie is not None and name in specs[-1].tied_weights:
            counts[-1] += param.numel()
    return [(layer.cls.__name__, count) for layer, count in zip(specs, counts, strict=True)]


def partition(layers: list[tuple[str, int]], stages: int, method: str) -> list[int]:
    """Stage boundaries over `layers`, as DeepSpeed's PipelineModule computes them."""
    if stages == 1:
        return [0, len(layers)]
    from deepspeed.runtime.utils import partition_balanced, partition_uniform

    method = method.lower()
    if method == "uniform":
        return [int(b) for b in partition_uniform(len(layers), stages)]
    if method == "parameters":
        return [int(b) for b in partition_balanced([count for _, count in layers], stages)]
    if method.startswith("type:"):
        pattern = re.compile(method.split(":", 1)[1], re.IGNORECASE)
        weights = [1 if pattern.search(name) else 0 for name, _ in layers]
        return [int(b) for b in partition_balanced(weights, stages)]
    raise ConfigError(
        f"pipe_partition_method {method!r} is not one of 'uniform', 'parameters', 'type:REGEX'"
    )


def _stage(
    run: RunConfig,
    config: ModelConfig,
    layout: ParallelDims,
    batch: BatchLayout,
    layers: list[tuple[str, int]],
    bounds: list[int],
    index: int,
) -> Stage:
    start, stop = bounds[index], bounds[index + 1]
    first, last = start == 0, stop == len(layers)
    blocks = sum(1 for i in range(start, stop) if 1 <= i <= config.num_layers)
    parameters = sum(count for _, count in layers[start:stop])
    states = model_state_bytes(parameters, training_of(run, layout))
    tokens = Tokens(
        config.seq_length,
        batch.micro_batch,
        layout.tensor,
        run.precision.dtype,
        sequence_parallel=run.parallel.splits_sequence,
    )
    # 1F1B: stage i holds the activations of up to (stages - i) micro-batches at once
    in_flight = min(layout.pipe - index, batch.grad_accum)
    saved = in_flight * _stage_activations(run, config, tokens, blocks, first, last)
    recomputed = _recompute_peak(run, config, tokens, blocks)
    return Stage(index, blocks, parameters, states, saved, recomputed, first, last)


def training_of(run: RunConfig, layout: ParallelDims) -> Training:
    optimizer = run.optimizer.optimizer
    kind = optimizer.kind
    moments = MOMENTS.get(kind, 1 if kind == "sgd" and optimizer.params.momentum else 0)
    zero = run.parallel.zero_optimization
    replicas = layout.data // layout.expert  # those holding the same parameters (ZeRO's group)
    return Training(
        dtype=run.precision.dtype,
        zero_stage=zero_stage(run, replicas),
        data_parallel=replicas,
        moments=moments,
        offload=zero.offloads_optimizer,
        pipeline=layout.pipe > 1,
    )


def _stage_activations(
    run: RunConfig, config: ModelConfig, tokens: Tokens, blocks: int, first: bool, last: bool
) -> int:
    """What one micro-batch leaves saved on a stage until its backward pass."""
    training = run.training
    if training.checkpoint_activations:
        chunks = -(-blocks // training.checkpoint_num_layers)
        total = chunks * checkpoint_input_bytes(config, tokens)
    else:
        total = blocks * block_activation_bytes(config, tokens)
    if first:
        total += embedding_activation_bytes(config, tokens)
    if last:
        total += head_activation_bytes(config, tokens, config.padded_vocab(tokens.tensor_parallel))
    return total


def _recompute_peak(run: RunConfig, config: ModelConfig, tokens: Tokens, blocks: int) -> int:
    """With checkpointing, the backward pass recomputes one chunk's activations at a time."""
    if not run.training.checkpoint_activations:
        return 0
    chunk = min(run.training.checkpoint_num_layers, blocks)
    return chunk * block_activation_bytes(config, tokens)


# Vocabularies assumed when the tokenizer file is not at hand: the ones GPT-NeoX's configs of
# each type use (GPT-2's BPE, the GPT-NeoX-20B tokenizer, LLaMA's SentencePiece, cl100k).
TYPICAL_VOCAB = {
    "GPT2BPETokenizer": 50257,
    "HFGPT2Tokenizer": 50257,
    "HFTokenizer": 50277,
    "SPMTokenizer": 32000,
    "TiktokenTokenizer": 100277,
}


def planning_vocab(run: RunConfig, given: int | None) -> tuple[int, str]:
    """(vocabulary size, where it came from) for a plan."""
    data = run.data
    if given is not None:
        return given, "--vocab-size"
    has_file = data.vocab_file is not None and Path(data.vocab_file).exists()
    if has_file or data.tokenizer_type == "CharLevelTokenizer":
        from neox_data import build_tokenizer

        tokenizer = build_tokenizer(data.tokenizer_type, data.vocab_file, data.merge_file)
        return tokenizer.vocab_size, "the tokenizer"
    assumed = TYPICAL_VOCAB[data.tokenizer_type]
    return assumed, f"assumed for {data.tokenizer_type}; give --vocab-size or a vocab_file"


def _zero_line(run: RunConfig, data_parallel: int) -> str:
    """ "ZeRO stage N", and the stage asked for when one fp32 replica runs it as stage 0."""
    stage, asked = zero_stage(run, data_parallel), run.parallel.zero_optimization.stage
    if stage == asked:
        return f"ZeRO stage {stage}"
    return f"ZeRO stage {stage} (zero_optimization.stage {asked} over one fp32 replica)"


def describe(plan: Plan, run: RunConfig, vocab_source: str) -> str:
    """The plan as the lines `neox plan` prints."""
    config, layout, batch, flops = plan.config, plan.layout, plan.batch, plan.flops
    lines = [
        f"model: {plan.parameters:,} parameters"
        + (
            f" ({plan.active_parameters:,} active: {config.moe_top_k} of "
            f"{config.moe_num_experts} experts in {config.moe_layers} layers)"
            if config.moe
            else ""
        )
        + f"; vocabulary {config.vocab_size:,} "
        f"({vocab_source}), padded to {config.padded_vocab(layout.tensor):,}",
        f"layout: {layout.world_size} GPUs = {layout.pipe} pipeline "
        f"stage(s) x {layout.tensor} tensor-parallel"
        + (" (sequence-parallel)" if run.parallel.splits_sequence else "")
        + f" x {layout.data} data-parallel; {_zero_line(run, layout.data)}, {run.precision.dtype}",
        f"batch: {batch.global_batch} sequences per step = {batch.micro_batch} per GPU x "
        f"{batch.grad_accum} accumulation step(s) x {batch.data_parallel} replica(s); "
        f"{plan.tokens_per_step:,} tokens per step",
        f"compute: {flops.model:.3e} model FLOPs per step (6N + attention, as MFU counts), "
        f"{flops.model / layout.world_size:.3e} per GPU"
        + (
            f"; {flops.hardware:.3e} with activation recomputation"
            if flops.hardware != flops.model
            else ""
        ),
        describe_prediction(plan.speed),
        f"memory per GPU, {_unit(plan)[0]}:",
        *_stage_table(plan),
        *_notes(plan, run),
    ]
    return "\n".join(lines)


def _unit(plan: Plan) -> tuple[str, int]:
    return ("GiB", GIB) if plan.heaviest.total >= GIB else ("MiB", 2**20)


def _stage_table(plan: Plan) -> list[str]:
    head = f"  {'stage':>5} {'layers':>6} {'parameters':>15} {'weights':>8} {'grads':>8}"
    head += f" {'optimizer':>9} {'activ.':>8} {'total':>8}"
    rows, unit = [head], _unit(plan)[1]
    for stage in plan.stages:
        states = stage.states
        rows.append(
            f"  {stage.index:>5} {stage.blocks:>6} {stage.parameters:>15,} "
            f"{states.parameters / unit:>8.2f} {states.gradients / unit:>8.2f} "
            f"{states.optimizer / unit:>9.2f} {stage.activations / unit:>8.2f} "
            f"{stage.total / unit:>8.2f}"
        )
    return rows


def _notes(plan: Plan, run: RunConfig) -> list[str]:
    heaviest, notes = plan.heaviest, []
    offloaded = max(stage.states.optimizer_on_cpu for stage in plan.stages)
    if offloaded:
        notes.append(f"optimizer offloaded to the CPU: {offloaded / GIB:.2f} GiB per GPU's rank")
    recompute = run.training.checkpoint_activations
    notes.append(
        "activations: per-layer saved tensors (Korthikanti et al., 2022, for neox's block; see "
        "neox_train.planning.memory_model)"
        + (", plus one recomputed chunk" if recompute else "")
        + "; not counted: CUDA context, kernels' workspace, communication buckets, fragmentation"
    )
    if plan.config.moe:
        notes.append(
            "mixture of experts: compute counts each token's top_k experts (active parameters); "
            "weights and optimizer state count every expert on its rank (moe_num_experts / "
            "moe_expert_parallel_size per rank); the MoE layers' activations are estimated as a "
            "dense MLP's"
        )
    if plan.gpu_memory is None:
        notes.append("give --gpu-memory GiB to check that it fits")
    elif not plan.fits:
        notes.append(
            f"WARNING: stage {heaviest.index} needs {heaviest.total / GIB:.2f} GiB per GPU, more "
            f"than the {plan.gpu_memory / GIB:.2f} GiB available: raise model_parallel_size, "
            "pipe_parallel_size or the ZeRO stage, lower train_micro_batch_size_per_gpu, or "
            "turn on checkpoint_activations"
        )
    else:
        notes.append(
            f"fits: {heaviest.total / GIB:.2f} of {plan.gpu_memory / GIB:.2f} GiB on the "
            "fullest GPU"
        )
    return notes
