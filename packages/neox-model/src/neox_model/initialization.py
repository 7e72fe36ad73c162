"""Weight initialisation methods of GPT-NeoX (`init_method`, `output_layer_init_method`).

normal: N(0, std). scaled_normal: N(0, std / sqrt(2 * num_layers)) (GPT-2 / Megatron).
small_init: N(0, sqrt(2 / (5 * hidden))) (Nguyen & Salazar, 2019).
wang_init: N(0, 2 / (num_layers * sqrt(hidden))) (Wang, GPT-J).
xavier_normal / xavier_uniform: Glorot & Bengio (2010), from the full matrix's fan-in and fan-out.

Every weight is drawn whole from a generator seeded by (seed, the weight's name in the full
model), and a tensor-parallel rank keeps its shard. So a model is the same whatever its tensor-
and pipeline-parallel layout, and any part of it (one pipeline stage) can be built alone.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from neox_model.config import InitMethod, ModelConfig
from neox_model.moe import Experts
from neox_model.norms import NORM_TYPES
from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    shard,
)

SHARDED = (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding)
OUTPUT_PROJECTIONS = ("attention.dense", "mlp.dense_4h_to_h")  # use output_layer_init_method
MOE_GATES = ("mlp.router", "mlp.shared_expert_gate")  # by init_method (GPT-NeoX's router's)
VALUE_HEAD = "score"  # a reward model's head (ModelConfig.value_head), by init_method


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
    method: InitMethod,
    config: ModelConfig,
    shape: tuple[int, ...],
    generator: torch.Generator,
    fans: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A full weight of `shape` drawn with `method`; `fans` (out, in): the matrix whose std it
    takes, when not `shape` itself (stacked experts)."""
    std = init_std(method, config, fans or shape)
    if method == "xavier_uniform":
        bound = math.sqrt(3.0) * std  # uniform(-a, a) has std a / sqrt(3)
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    return torch.empty(shape).normal_(0.0, std, generator=generator)


def weight_generator(seed: int, name: str) -> torch.Generator:
    """A generator seeded from the model seed and a weight's full name (stable across runs)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def full_shape(module: nn.Module) -> tuple[int, int]:
    """The shape of a module's weight before tensor-parallel sharding."""
    if isinstance(module, ColumnParallelLinear | RowParallelLinear):
        return (module.out_features, module.in_features)
    assert isinstance(module, VocabParallelEmbedding | nn.Embedding)
    return (module.num_embeddings, module.embedding_dim)


def init_weights(root: nn.Module, config: ModelConfig, seed: int, prefix: str = "") -> None:
    """Initialise every parameter under `root`, whose name in the full model is `prefix`."""
    with torch.no_grad():
        for name, module in root.named_modules(prefix=prefix):
            if isinstance(module, NORM_TYPES):
                module.reset_parameters()
            elif isinstance(module, SHARDED) or type(module) is nn.Embedding:
                output = name.endswith(OUTPUT_PROJECTIONS)
                method = config.output_layer_init_method if output else config.init_method
                generator = weight_generator(seed, f"{name}.weight")
                full = init_tensor(method, config, full_shape(module), generator)
                weight = module.shard_weight(full) if isinstance(module, SHARDED) else full
                module.weight.copy_(weight)
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
            elif isinstance(module, Experts):
                _init_experts(module, name, config, seed)
            elif isinstance(module, nn.Linear) and (name.endswith(MOE_GATES) or name == VALUE_HEAD):
                generator = weight_generator(seed, f"{name}.weight")
                full = init_tensor(
                    config.init_method, config, tuple(module.weight.shape), generator
                )
                module.weight.copy_(full)


def _init_experts(module: Experts, name: str, config: ModelConfig, seed: int) -> None:
    """Each expert's matrices as a dense MLP's: the input side by `init_method`, the output side
    by `output_layer_init_method`, drawn (out, in) per expert and stored (in, out); biases 0.
    Every expert is drawn, then this rank keeps its own (split over tensor- or expert-parallel
    ranks), so the numbers do not depend on the layout."""
    split = module.split
    for attr, method in (("w_in", config.init_method), ("w_out", config.output_layer_init_method)):
        weight = getattr(module, attr)
        local, fan_in, fan_out = weight.shape
        experts = local * split.size
        generator = weight_generator(seed, f"{name}.{attr}")
        # the std of one expert's (out, in) matrix, also for xavier (its fans, not the stack's)
        full = init_tensor(
            method, config, (experts * fan_out, fan_in), generator, (fan_out, fan_in)
        )
        full = full.view(experts, fan_out, fan_in).transpose(1, 2)
        weight.copy_(shard(full, split, 0) if split.size > 1 else full)
    for bias in (module.b_in, module.b_out):
        if bias is not None:
            bias.zero_()
