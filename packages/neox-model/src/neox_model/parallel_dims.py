"""The parallel layout of a run: how many ways its ranks split the model and the data.

world size = tensor x pipe x data. GPT-NeoX's config calls the tensor-parallel size
`model_parallel_size` and the stages `pipe_parallel_size` (0 and 1 both mean one stage); in code
both are read into this one class, and nowhere else is a parallel size given another name.
`expert` (GPT-NeoX's `moe_expert_parallel_size`) is carved from the data-parallel replicas: each
group of `expert` adjacent replicas splits the mixture-of-experts layers' experts among them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelDims:
    tensor: int = 1  # tensor-parallel slices of every weight matrix
    pipe: int = 1  # pipeline stages (1 = no pipeline)
    data: int = 1  # data-parallel replicas
    expert: int = 1  # expert-parallel ranks, out of the data-parallel replicas

    def __post_init__(self) -> None:
        if min(self.tensor, self.pipe, self.data, self.expert) < 1:
            raise ValueError(f"parallel sizes must be at least 1, got {self}")
        if self.data % self.expert:
            raise ValueError(
                f"moe_expert_parallel_size {self.expert} does not divide the {self.data} "
                "data-parallel replicas it is carved from"
            )

    @property
    def slices(self) -> int:
        """Model-parallel slices: ranks of one replica holding different parameters (the
        tensor-parallel ranks, or the expert-parallel ones; the two do not combine yet)."""
        return self.tensor * self.expert

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipe * self.data

    def describe(self) -> str:
        experts = f" (expert-parallel {self.expert})" if self.expert > 1 else ""
        return f"tensor {self.tensor} x pipeline {self.pipe} x data {self.data}{experts}"
