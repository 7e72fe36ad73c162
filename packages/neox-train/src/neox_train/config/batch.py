"""Batch math: global batch = micro batch x gradient accumulation steps x data-parallel size.

Any two of the three batch keys give the third; the data-parallel size is the world size divided
by the pipeline and tensor-parallel sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from neox_train.config.schema import ConfigError


@dataclass(frozen=True)
class BatchLayout:
    global_batch: int  # train_batch_size: samples per optimizer step, all ranks together
    micro_batch: int  # train_micro_batch_size_per_gpu: samples per forward on one rank
    grad_accum: int  # gradient_accumulation_steps
    data_parallel: int  # number of model replicas

    def per_replica_group(self, size: int) -> BatchLayout:
        """The layout as DeepSpeed sees it when each `size` replicas act as one (expert
        parallelism: DeepSpeed's data-parallel ranks are those holding the same experts)."""
        if size == 1:
            return self
        replicas = self.data_parallel // size
        return BatchLayout(
            self.micro_batch * self.grad_accum * replicas,
            self.micro_batch,
            self.grad_accum,
            replicas,
        )


def data_parallel_size(world_size: int, pipe_parallel: int, tensor_parallel: int) -> int:
    stages = max(pipe_parallel, 1)  # GPT-NeoX: pipe_parallel_size 0 and 1 both mean one stage
    if world_size <= 0:
        raise ConfigError(f"world size must be positive, got {world_size}")
    if world_size % (stages * tensor_parallel):
        raise ConfigError(
            f"world size {world_size} is not divisible by pipe_parallel_size ({stages}) x "
            f"model_parallel_size ({tensor_parallel}) = {stages * tensor_parallel}"
        )
    return world_size // (stages * tensor_parallel)


def stated_data_parallel(
    global_batch: int | None, micro_batch: int | None, grad_accum: int | None
) -> int:
    """The data-parallel size the three batch keys fix when all are given, else 1 (the
    smallest)."""
    if global_batch and micro_batch and grad_accum:
        return max(global_batch // (micro_batch * grad_accum), 1)
    return 1


def resolve_batch(
    data_parallel: int,
    global_batch: int | None,
    micro_batch: int | None,
    grad_accum: int | None,
) -> BatchLayout:
    """Fill in the missing batch value(s) and check that the three agree."""
    for name, value in (
        ("train_batch_size", global_batch),
        ("train_micro_batch_size_per_gpu", micro_batch),
        ("gradient_accumulation_steps", grad_accum),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    if micro_batch is None and global_batch is None:
        raise ConfigError(
            "set train_micro_batch_size_per_gpu or train_batch_size (with or without "
            "gradient_accumulation_steps)"
        )
    if micro_batch is None:
        assert global_batch is not None
        grad_accum = grad_accum or 1
        micro_batch = _exact(global_batch, grad_accum * data_parallel, "micro batch")
    elif global_batch is None:
        grad_accum = grad_accum or 1
        global_batch = micro_batch * grad_accum * data_parallel
    elif grad_accum is None:
        grad_accum = _exact(global_batch, micro_batch * data_parallel, "accumulation steps")
    if global_batch != micro_batch * grad_accum * data_parallel:
        raise ConfigError(
            f"train_batch_size ({global_batch}) != train_micro_batch_size_per_gpu ({micro_batch})"
            f" x gradient_accumulation_steps ({grad_accum}) x data-parallel size "
            f"({data_parallel})"
        )
    return BatchLayout(global_batch, micro_batch, grad_accum, data_parallel)


def _exact(total: int, divisor: int, what: str) -> int:
    if total % divisor:
        raise ConfigError(
            f"train_batch_size ({total}) is not divisible by {divisor}, so the {what} is not "
            "a whole number; change train_batch_size or the other batch keys"
        )
    return total // divisor
