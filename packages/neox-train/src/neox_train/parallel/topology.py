"""How the ranks of a run are arranged, and their process groups.

world = pipeline stages x data-parallel replicas x tensor-parallel slices, tensor-parallel ranks
adjacent (Megatron's order: a tensor-parallel group shares a node first). The layout is
DeepSpeed's `PipeModelDataParallelTopology`, so its pipeline engine and neox agree on every
group; `ModelParallelUnit` is the `mpu` DeepSpeed asks for when there is no pipeline.

Expert parallelism (`moe_expert_parallel_size` E, carved from the D data-parallel replicas):
replicas d with the same d // E form an expert-parallel group (adjacent ranks: the all-to-all
stays on a node first), holding E different shares of the experts; replicas with the same d % E
hold the same share and form its expert-data-parallel group. DeepSpeed is shown the expert-
parallel ranks as model-parallel slices and the expert-data-parallel group as the data-parallel
one: it reduces and partitions (ZeRO) every gradient over the ranks holding the same experts, and
saves each rank's share in its own mp_rank_XX file. The rest of the reduction, the dense
parameters' gradients over the expert-parallel group, is neox's (`average_over_experts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from neox_model import ParallelDims, TPGroup
from neox_train.config.batch import data_parallel_size
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError


def parallel_dims(run: RunConfig, world_size: int) -> ParallelDims:
    """The run's layout over `world_size` ranks (raises ConfigError when it does not fit)."""
    parallel = run.parallel
    data = data_parallel_size(world_size, parallel.pipe_parallel_size, parallel.model_parallel_size)
    expert = parallel.moe_expert_parallel_size
    if data % expert:
        raise ConfigError(
            f"moe_expert_parallel_size {expert} must divide the data-parallel size: {world_size} "
            f"ranks give {data} replicas"
        )
    return ParallelDims(
        tensor=parallel.model_parallel_size,
        pipe=max(parallel.pipe_parallel_size, 1),
        data=data,
        expert=expert,
    )


@dataclass(frozen=True)
class Parallel:
    """This rank's place in the layout and its groups (built once per run)."""

    dims: ParallelDims
    topology: Any  # deepspeed.runtime.pipe.topology.PipeModelDataParallelTopology
    grid: Any  # deepspeed.runtime.pipe.topology.PipelineParallelGrid
    tp: TPGroup
    ep: TPGroup  # the expert-parallel group (a group of one without expert parallelism)
    expert_data_group: Any = None  # the replicas holding this rank's experts (None: ep is 1)

    @property
    def data_rank(self) -> int:
        return int(self.grid.get_data_parallel_rank())

    @property
    def slice(self) -> TPGroup:
        """The model-parallel slices of this replica: the tensor-parallel group, or the expert-
        parallel one (they do not combine yet)."""
        return self.ep if self.ep.size > 1 else self.tp

    @property
    def replica_group(self) -> Any:
        """The ranks of one replica holding different parameters, over which a whole-model sum
        (a norm) runs: the tensor-parallel and pipeline ranks, or the expert-parallel ones."""
        return self.ep.group if self.ep.size > 1 else self.grid.get_model_parallel_group()

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
    if dims.expert == 1:
        return Parallel(dims, topology, grid, tp, TPGroup.single())
    ep, expert_data = _expert_groups(dims, topology)
    return Parallel(dims, topology, grid, tp, ep, expert_data)


def _expert_groups(dims: ParallelDims, topology: Any) -> tuple[TPGroup, Any]:
    """This rank's expert-parallel group and expert-data-parallel group (collective: every rank
    creates every group, in the same order)."""
    rank, expert = dist.get_rank(), dims.expert
    mine: dict[str, Any] = {}
    for pipe in range(dims.pipe):
        for tensor in range(dims.tensor):
            replicas = [
                topology.get_rank(pipe=pipe, data=d, model=tensor) for d in range(dims.data)
            ]
            for first in range(0, dims.data, expert):  # adjacent replicas: one expert group
                ranks = replicas[first : first + expert]
                group = dist.new_group(ranks)
                if rank in ranks:
                    mine["ep"] = group
            for share in range(expert):  # the replicas holding the same experts
                ranks = replicas[share::expert]
                group = dist.new_group(ranks)
                if rank in ranks:
                    mine["edp"] = group
    return TPGroup.of(mine["ep"]), mine["edp"]


class ModelParallelUnit:
    """DeepSpeed's `mpu` interface over the grid, for runs without a pipeline: "model parallel"
    means tensor parallel, or expert parallel; data parallel is the replicas holding the same
    parameters (with expert parallelism: the same experts)."""

    def __init__(self, parallel: Parallel) -> None:
        self.grid = parallel.grid
        self.parallel = parallel
        self.expert = parallel.dims.expert

    def get_model_parallel_rank(self) -> int:
        if self.expert > 1:
            return self.parallel.ep.rank
        return int(self.grid.get_slice_parallel_rank())

    def get_model_parallel_world_size(self) -> int:
        if self.expert > 1:
            return self.expert
        return int(self.grid.get_slice_parallel_world_size())

    def get_model_parallel_group(self) -> Any:
        if self.expert > 1:
            return self.parallel.ep.group
        return self.grid.get_slice_parallel_group()

    def get_data_parallel_rank(self) -> int:
        rank = int(self.grid.get_data_parallel_rank())
        return rank // self.expert  # the rank among the replicas holding the same experts

    def get_data_parallel_world_size(self) -> int:
        return int(self.grid.get_data_parallel_world_size()) // self.expert

    def get_data_parallel_group(self) -> Any:
        if self.expert > 1:
            return self.parallel.expert_data_group
        return self.grid.get_data_parallel_group()

    # the same, under the names newer DeepSpeed code paths look for
    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group
