"""The model as a flat sequence of one-tensor-in, one-tensor-out layers, for pipeline
parallelism (Huang et al., 2019, "GPipe"; DeepSpeed's PipelineModule with 1F1B scheduling):

    EmbeddingPipe (ids -> hidden), BlockPipe x num_layers, FinalNormPipe, OutputPipe (-> logits)

Each layer builds only its own weights, initialised exactly as `Transformer` initialises the
same weights (from the seed and the weight's name there), so a pipeline stage builds its layers
alone and the model is the same whatever the layout. `model_name` maps a layer's parameter names
to the Transformer's, which is how per-layer checkpoints map back to one model.

A model whose output layer is tied to the input embedding (`no_weight_tying: false`) ends with
`TiedOutputPipe` instead of `OutputPipe`: the last stage's copy of the embedding weight, which
the pipeline engine keeps equal to the first stage's (DeepSpeed's TiedLayerSpec: the copies
start equal and their gradients are summed over the two stages before each step). Both layers
carry the tie key `EMBED_TIE`; the copy is not a weight of its own: it is saved and loaded with
the first stage's embedding.

With `sequence_parallel` the tensors passed from stage to stage are each tensor-parallel rank's
part of the sequence, (batch, seq / tp, hidden), sent to the same rank of the next stage (the
pipeline engine must send them whole: DeepSpeed's `pipe_partitioned` off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from neox_model.config import ModelConfig
from neox_model.initialization import init_weights
from neox_model.norms import build_norm
from neox_model.rotary import RotaryEmbedding
from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    TPGroup,
    VocabParallelEmbedding,
    column_parallel_linear,
    next_token_loss,
    sum_replicated_gradients,
)
from neox_model.transformer import Block, WithEmbeddings, softcap

# The tie key of the input embedding and the tied output layer, and the weight they share.
EMBED_TIE = "embed"
TIED_WEIGHT = "embed_in.weight"


class PipeLayer(NamedTuple):
    """One layer of the pipeline: its class and constructor arguments, and, for the layers of a
    tied embedding, the tie key and the weights the tied layers share (the first layer with the
    key owns the weights; later ones run on a copy that the pipeline engine keeps equal)."""

    cls: type[nn.Module]
    args: tuple[Any, ...]
    tie: str | None = None
    tied_weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerArgs:
    """What every pipeline layer is built from (`pipeline_specs` makes one for all of them)."""

    config: ModelConfig
    tp: TPGroup
    seed: int
    vocab: int  # rows of the embedding and output layer: the vocabulary padded for the layout
    sequence_parallel: bool  # on, over more than one tensor-parallel rank


class EmbeddingPipe(WithEmbeddings):
    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        self.add_embeddings(args.config, args.tp, args.vocab, args.sequence_parallel)
        init_weights(self, args.config, args.seed)
        if self.sequence_parallel:
            sum_replicated_gradients(self, args.tp)

    def model_name(self, name: str) -> str:
        return name

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq) ids -> (batch, seq, hidden), or (batch, seq / tp, hidden)."""
        return self.embed(input_ids, torch.arange(input_ids.shape[1], device=input_ids.device))


class TiedOutputPipe(nn.Module):
    """hidden -> logits through the input embedding's weight (a copy of the first stage's, this
    rank's share of the vocabulary), as `Transformer.logits` computes a tied output."""

    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        self.tp = args.tp
        self.sequence_parallel = args.sequence_parallel
        self.embed_in = VocabParallelEmbedding(
            args.vocab, args.config.hidden_size, args.tp, sequence_parallel=args.sequence_parallel
        )
        self.cap = args.config.final_logit_softcapping
        init_weights(self, args.config, args.seed)  # as the first stage's: the same name, seed

    def model_name(self, name: str) -> str:
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq or seq / tp, hidden) -> (batch, seq, vocab / tp)."""
        local = column_parallel_linear(
            x, self.embed_in.weight, None, self.tp, sequence_parallel=self.sequence_parallel
        )
        return softcap(local, self.cap)


def run_tied(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A tied layer after the first, run on its copy (DeepSpeed TiedLayerSpec's forward_fn: a
    function, which the engine neither saves nor loads: the copy follows the first stage's)."""
    return module(x)  # type: ignore[no-any-return]


class TransformerLayerPipe(nn.Module):
    """One block (named so that GPT-NeoX's `pipe_partition_method: type:transformer` finds it)."""

    def __init__(self, args: LayerArgs, index: int) -> None:
        super().__init__()
        config, tp = args.config, args.tp
        if config.is_moe_layer(index):  # its auxiliary losses would not reach the loss
            raise ValueError(
                "mixture-of-experts layers do not run in a pipeline yet: use pipe_parallel_size 1"
            )
        self.index = index
        self.block = Block(config, tp, index, sequence_parallel=args.sequence_parallel)
        init_weights(self.block, config, args.seed, prefix=f"layers.{index}")
        # the input holds 1 / shards of the sequence
        self.shards = tp.size if args.sequence_parallel else 1
        if self.shards > 1:
            sum_replicated_gradients(self, tp)
        # rotary holds no weights: each stage computes its own cos/sin
        self.rotary = (
            RotaryEmbedding(config.rotary_dim, config.rotary_emb_base, scaling=config.rope_scaling)
            if config.pos_emb == "rotary"
            else None
        )

    def model_name(self, name: str) -> str:
        return name.replace("block.", f"layers.{self.index}.", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq or seq / tp, hidden) -> the same."""
        positions = torch.arange(x.shape[1] * self.shards, device=x.device)  # the whole sequence
        rope = self.rotary(positions) if self.rotary is not None else None
        return self.block(x, rope, positions, None)  # type: ignore[no-any-return]


class FinalNormPipe(nn.Module):
    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        self.final_layer_norm = build_norm(args.config)
        if args.sequence_parallel:
            sum_replicated_gradients(self, args.tp)

    def model_name(self, name: str) -> str:
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(x)  # type: ignore[no-any-return]


class OutputPipe(nn.Module):
    """hidden -> logits over this tensor-parallel rank's share of the vocabulary."""

    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        if not args.config.no_weight_tying:
            raise ValueError("a tied output layer (no_weight_tying: false) is TiedOutputPipe")
        self.tp = args.tp
        self.embed_out = ColumnParallelLinear(
            args.config.hidden_size,
            args.vocab,
            args.tp,
            bias=False,
            sequence_parallel=args.sequence_parallel,
        )
        self.cap = args.config.final_logit_softcapping
        init_weights(self, args.config, args.seed)

    def model_name(self, name: str) -> str:
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq or seq / tp, hidden) -> (batch, seq, vocab / tp)."""
        return softcap(self.embed_out(x), self.cap)


def pipeline_specs(
    config: ModelConfig,
    tp: TPGroup,
    seed: int,
    padded_vocab: int | None = None,
    sequence_parallel: bool = False,
) -> list[PipeLayer]:
    """Every layer, in order; a pipeline engine builds only the ones of its stage (DeepSpeed:
    `LayerSpec(cls, *args)`, `TiedLayerSpec` for a layer with a tie key). `padded_vocab` and
    `sequence_parallel` as `Transformer`'s. A parameter's layer is `pipeline_layer`."""
    vocab = padded_vocab or config.padded_vocab(tp.size)
    args = LayerArgs(config, tp, seed, vocab, sequence_parallel and tp.size > 1)
    blocks = [PipeLayer(TransformerLayerPipe, (args, i)) for i in range(config.num_layers)]
    if config.no_weight_tying:
        return [
            PipeLayer(EmbeddingPipe, (args,)),
            *blocks,
            PipeLayer(FinalNormPipe, (args,)),
            PipeLayer(OutputPipe, (args,)),
        ]
    return [
        PipeLayer(EmbeddingPipe, (args,), EMBED_TIE, (TIED_WEIGHT,)),
        *blocks,
        PipeLayer(FinalNormPipe, (args,)),
        PipeLayer(TiedOutputPipe, (args,), EMBED_TIE, (TIED_WEIGHT,)),
    ]


def pipeline_layer(name: str, config: ModelConfig) -> int:
    """The index in `pipeline_specs` (DeepSpeed's layer index) of the layer holding the
    `Transformer`'s parameter `name`: 0 the embeddings, 1 + i block i, then the final norm and
    the output layer (an untied one: a tied output's weight is the embedding's, in layer 0)."""
    head, _, rest = name.partition(".")
    match head:
        case "layers":
            return 1 + int(rest.partition(".")[0])
        case "final_layer_norm":
            return config.num_layers + 1
        case "embed_out":
            return config.num_layers + 2
    return 0  # the token and position embeddings


def pipeline_loss(tp: TPGroup) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss DeepSpeed's PipelineModule calls with (logits shard, labels)."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return next_token_loss(logits, labels, tp)  # labels may hold IGNORE_INDEX

    return loss


def layer_name_map(config: ModelConfig, layer_index: int) -> tuple[str, str]:
    """(prefix in the pipeline layer's state dict, prefix in the Transformer's) of the layer at
    `layer_index` (as `pipeline_layer` numbers them)."""
    if 1 <= layer_index <= config.num_layers:
        return "block.", f"layers.{layer_index - 1}."
    return "", ""
