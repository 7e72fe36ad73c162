"""Building the model and the DeepSpeed engine for a run's layout.

Without a pipeline the model is one `Transformer` (tensor-parallel over the grid's slice group)
handed to `deepspeed.initialize` with `ModelParallelUnit` as its mpu. With a pipeline it is a
DeepSpeed `PipelineModule` of neox-model's pipeline layers, each stage building only its own
layers. Either way every weight starts as the same number whatever the layout.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from neox_model import (
    ModelConfig,
    TPGroup,
    Transformer,
    build_kernels,
    pipeline_loss,
    pipeline_specs,
    run_tied,
    shard_spec,
)
from neox_model.checkpoint import load_file
from neox_model.moe import Experts
from neox_train.config.batch import BatchLayout
from neox_train.config.run_config import RunConfig
from neox_train.engine.deepspeed_config import deepspeed_config, neox_checks_gradients, zero_stage
from neox_train.engine.deepspeed_internals import check_op_build
from neox_train.engine.optimizer import GradientGuard, build_optimizer
from neox_train.engine.schedule import Schedule, ScheduledLR
from neox_train.parallel.topology import ModelParallelUnit, Parallel

log = logging.getLogger(__name__)


class TrainingEngine(Protocol):
    """What the training loop asks of DeepSpeed's engine (`DeepSpeedEngine`, or `PipelineEngine`
    with a pipeline); checkpoint code reaches further in, through `deepspeed_internals`."""

    module: nn.Module
    optimizer: Any  # the wrapped optimizer (ZeRO, bf16, fp16 or neox's GradientGuard)
    skipped_steps: int  # optimizer steps skipped so far for non-finite gradients

    def __call__(self, inputs: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor: ...
    def backward(self, loss: torch.Tensor) -> Any: ...
    def step(self) -> None: ...
    def train_batch(self, data_iter: Any) -> torch.Tensor: ...  # pipeline: a whole step
    def eval_batch(self, data_iter: Any, num_micro_batches: int) -> torch.Tensor: ...
    def reset_activation_shape(self) -> None: ...  # pipeline: the sequence length changed
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def get_lr(self) -> list[float]: ...
    def get_global_grad_norm(self) -> float | None: ...


def mark_tensor_parallel(model: nn.Module, tp: TPGroup) -> None:
    """Tag the parameters that differ across the model-parallel slices (split over `tp`, or
    experts over the expert-parallel ranks) as DeepSpeed expects, so that gradient norms count
    every shard once and the parameters each slice holds whole once per replica."""
    for module in model.modules():
        split = module.split if isinstance(module, Experts) else tp
        for name, param in module.named_parameters(recurse=False):
            sharded = shard_spec(module, name) is not None and split.size > 1
            setattr(param, "model_parallel", sharded)  # noqa: B010


def average_over_experts(model: nn.Module, ep: TPGroup) -> None:
    """The expert-parallel share of the gradient reduction, as backward computes each gradient
    (before DeepSpeed reduces over the replicas holding the same experts and divides by their
    number, D / E of the D replicas): a parameter every rank of the expert-parallel group holds
    is averaged over the group; an expert's gradient, which already sums the slots of every
    rank of the group, is divided by its size E. Together: the mean over all D replicas."""
    size = ep.size

    def averaged(grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=ep.group)
        return total / size

    for module in model.modules():
        split = isinstance(module, Experts) and module.expert_parallel
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                param.register_hook(_divided_by(size) if split else averaged)


def _divided_by(size: int) -> Any:
    return lambda grad: grad / size


def build_module(
    run: RunConfig,
    model_config: ModelConfig,
    parallel: Parallel,
    padded_vocab: int | None = None,
    loss_fn: Any = None,
) -> nn.Module:
    """`padded_vocab`: the embedding rows of a checkpoint saved at another tensor-parallel size,
    kept on resume (the padding rows take part in the softmax). `loss_fn`: a pipeline's loss
    (the next-token loss by default)."""
    seed, training = run.training.seed, run.training
    sequence_parallel = run.parallel.sequence_parallel
    # activation checkpointing: blocks per recomputed chunk, 0 = off (either way of building)
    recompute_every = training.checkpoint_num_layers if training.checkpoint_activations else 0
    if parallel.dims.pipe == 1:
        model = Transformer(
            model_config,
            tp=parallel.tp,
            seed=seed,
            padded_vocab=padded_vocab,
            sequence_parallel=sequence_parallel,
            checkpoint_num_layers=recompute_every,
            ep=parallel.ep if parallel.dims.expert > 1 else None,
        )
        if parallel.dims.expert > 1:
            average_over_experts(model, parallel.ep)
        if training.torch_compile:
            model.compile_blocks()
        return model
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    layers = pipeline_specs(model_config, parallel.tp, seed, padded_vocab, sequence_parallel)
    specs: list[Any] = []
    owned: set[str] = set()
    for layer in layers:
        if layer.tie is None:
            specs.append(LayerSpec(layer.cls, *layer.args))
            continue
        # the first layer of a tie owns the weights (saved with it); later ones run on a copy
        # the engine keeps equal: first broadcast from the owner's stage, then their gradients
        # summed over the stages holding a copy
        forward = run_tied if layer.tie in owned else None
        owned.add(layer.tie)
        specs.append(
            TiedLayerSpec(
                layer.tie,
                layer.cls,
                *layer.args,
                forward_fn=forward,
                tied_weight_attr=list(layer.tied_weights),
            )
        )
    return PipelineModule(
        layers=specs,
        topology=parallel.topology,
        loss_fn=loss_fn or pipeline_loss(parallel.tp, model_config),
        partition_method=run.parallel.pipe_partition_method,
        activation_checkpoint_interval=recompute_every,
        activation_checkpoint_func=functools.partial(checkpoint, use_reentrant=False),
    )


def build_engine(
    run: RunConfig,
    model_config: ModelConfig,
    parallel: Parallel,
    batch: BatchLayout,
    schedule: Schedule,
    device: torch.device,
    padded_vocab: int | None = None,
    loss_fn: Any = None,
) -> TrainingEngine:
    """The DeepSpeed engine (a PipelineEngine when the layout has a pipeline, `loss_fn` its
    loss when given)."""
    import deepspeed

    build_kernels(model_config, device)  # compiled before the model runs, where asked for
    # on the device before the optimizer is built
    module = build_module(run, model_config, parallel, padded_vocab, loss_fn).to(device)
    mark_tensor_parallel(module, parallel.tp)
    if run.optimizer.optimizer.kind == "cpu_adam":
        check_op_build("cpu_adam")  # every rank, before any of them starts building it
        dist.barrier()
    optimizer = build_optimizer(module, run.optimizer)
    # the replicas DeepSpeed reduces over: those holding the same parameters (with expert
    # parallelism, the same experts; see neox_train.parallel.topology)
    replicas = parallel.dims.data // parallel.dims.expert
    if neox_checks_gradients(run, replicas):
        clip = run.optimizer.gradient_clipping
        optimizer = GradientGuard(optimizer, clip, parallel.replica_group, parallel.slice.rank)
    stage = zero_stage(run, replicas)
    if stage != run.parallel.zero_optimization.stage:
        log.info(
            "zero_optimization.stage %d over one data-parallel replica in fp32 runs as stage %d "
            "(nothing to partition)",
            run.parallel.zero_optimization.stage,
            stage,
        )
    scheduler = ScheduledLR(optimizer, schedule)
    mpu = ModelParallelUnit(parallel) if parallel.dims.pipe == 1 else None
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(run, batch.per_replica_group(parallel.dims.expert)),
        mpu=mpu,
    )
    if replicas == 1 and stage == 0:  # DeepSpeed all-reduces the gradients over one replica
        engine.enable_backward_allreduce = False
        engine.pipeline_enable_backward_allreduce = False
    engine.checkpoint_engine = SafeLoading(engine.checkpoint_engine)
    return cast(TrainingEngine, engine)


class SafeLoading:
    """DeepSpeed's checkpoint engine, reading files as every neox reader does
    (`neox_model.checkpoint.load_file`: weights_only, a short allow-list) instead of with
    `weights_only=False`; every other method is the wrapped engine's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_file(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
