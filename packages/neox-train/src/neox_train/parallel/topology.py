"""How the ranks of a run are arranged, and their process groups.

world = pipeline stages x data-parallel replicas x tensor-parallel slices, tensor-parallel ranks
adjacent (Megatron's order: a tensor-parallel group shares a node first). The layout is
DeepSpeed's `PipeModelDataParallelTopology`, so its pipeline engine and neox agree on every
group; `ModelParallelUnit` is the `mpu` DeepSpeed asks for when there is no pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from neox_model import ParallelDims, TPGroup
from neox_train.config.batch import data_parallel_size
from neox_train.config.run_config import RunConfig


def parallel_dims(run: RunConfig, world_size: int) -> ParallelDims:
    """The run's layout over `world_size` ranks (raises ConfigError when it does not fit)."""
    parallel = run.parallel
    data = data_parallel_size(world_size, parallel.pipe_parallel_size, parallel.model_parallel_size)
    return ParallelDims(
        tensor=parallel.model_parallel_size, pipe=max(parallel.pipe_parallel_size, 1), data=data
    )


@dataclass(frozen=True)
class Parallel:
    """This rank's place in the layout and its groups (built once per run)."""

    dims: ParallelDims
    topology: Any  # deepspeed.runtime.pipe.topology.PipeModelDataParallelTopology
    grid: Any  # deepspeed.runtime.pipe.topology.PipelineParallelGrid
    tp: TPGroup

    @property
    def data_rank(self) -> int:
        return int(self.grid.get_data_parallel_rank())

    @property
    def pipe_stage(self) -> int:
        return int(self.grid.get_stage_id())


def build_parallel(dims: ParallelDims) -> Parallel:
    """Create the process groups of `dims` (collective: every rank calls it)."""
    from deepspeed.runtime.pipe.topology import (
        PipelineParallelGrid,
        PipeModelDataParallelTopology,
    )

    if dims.world_size != dist.get_world_size():
        raise ValueError(f"layout {dims} does not cover {dist.get_world_size()} ranks")
    topology = PipeModelDataParallelTopology(num_pp=dims.pipe, num_mp=dims.tensor, num_dp=dims.data)
    grid = PipelineParallelGrid(topology=topology)
    tp = TPGroup.of(grid.get_slice_parallel_group()) if dims.tensor > 1 else TPGroup.single()
    return Parallel(dims, topology, grid, tp)


class ModelParallelUnit:
    """DeepSpeed's `mpu` interface over the grid, for runs without a pipeline: "model parallel"
    means tensor parallel; data parallel is the replicas."""

    def __init__(self, parallel: Parallel) -> None:
        self.grid = parallel.grid

    def get_model_parallel_rank(self) -> int:
        return int(self.grid.get_slice_parallel_rank())

    def get_model_parallel_world_size(self) -> int:
        return int(self.grid.get_slice_parallel_world_size())

    def get_model_parallel_group(self) -> Any:
        return self.grid.get_slice_parallel_group()

    def get_data_parallel_rank(self) -> int:
        return int(self.grid.get_data_parallel_rank())

    def get_data_parallel_world_size(self) -> int:
        return int(self.grid.get_data_parallel_world_size())

    def get_data_parallel_group(self) -> Any:
        return self.grid.get_data_parallel_group()

    # the same, under the names newer DeepSpeed code paths look for
    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group
