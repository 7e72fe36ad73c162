"""Weight initialisation methods of GPT-NeoX (`init_method`, `output_layer_init_method`).

normal: N(0, std). scaled_normal: N(0, std / sqrt(2 * num_layers)) (GPT-2 / Megatron).
small_init: N(0, sqrt(2 / (5 * hidden))) (Nguyen & Salazar, 2019).
wang_init: N(0, 2 / (num_layers * sqrt(hidden))) (Wang, GPT-J).
xavier_normal / xavier_uniform: Glorot & Bengio (2010), from the full matrix's fan-in and fan-out.

A weight is always drawn whole, from one generator, in module order; a tensor-parallel rank
keeps its shard. So a model is the same whatever the tensor-parallel size.
"""

from __future__ import annotations

import math

import torch

from neox_model.config import InitMethod, ModelConfig


def init_std(method: InitMethod, config: ModelConfig, shape: tuple[int, ...]) -> float:
    fan_out, fan_in = shape[0], shape[-1]
    match method:
        case "normal":
            return config.init_method_std
        case "scaled_normal":
            return config.init_method_std / math.sqrt(2.0 * config.num_layers)
        case "small_init":
            return math.sqrt(2.0 / (5.0 * config.hidden_size))
        case "wang_init":
            return 2.0 / (config.num_layers * math.sqrt(config.hidden_size))
        case "xavier_normal" | "xavier_uniform":
            return math.sqrt(2.0 / (fan_in + fan_out))


def init_tensor(
    method: InitMethod, config: ModelConfig, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """A full weight of `shape` drawn with `method`."""
    std = init_std(method, config, shape)
    if method == "xavier_uniform":
        bound = math.sqrt(3.0) * std  # uniform(-a, a) has std a / sqrt(3)
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    return torch.empty(shape).normal_(0.0, std, generator=generator)
