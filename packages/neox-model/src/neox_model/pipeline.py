"""The model as a flat sequence of one-tensor-in, one-tensor-out layers, for pipeline
parallelism (Huang et al., 2019, "GPipe"; DeepSpeed's PipelineModule with 1F1B scheduling):

    EmbeddingPipe (ids -> hidden), BlockPipe x num_layers, FinalNormPipe, OutputPipe (-> logits)

(a reward model, `value_head`, ends with ScorePipe instead: one score per position).

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

A model with mixture-of-experts layers passes a pair between stages: the hidden states and, in
float32, the MoE layers' statistics so far (`moe.layer_stats` summed: the slots per expert, the
router probabilities summed, the z-losses), which the loss (`pipeline_loss`) turns into the
auxiliary losses over every layer together, exactly as `Transformer` does; their gradient flows
back through the pair to each layer's router.

With `sequence_parallel` the tensors passed from stage to stage are each tensor-parallel rank's
part of the sequence, (batch, seq / tp, hidden), sent to the same rank of the next stage (the
pipeline engine must send them whole: DeepSpeed's `pipe_partitioned` off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import torch
from torch import nn

from neox_model.config import ModelConfig
from neox_model.initialization import init_weights
from neox_model.moe import MoELosses, moe_aux_loss
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

# What passes between stages: the hidden states, or (with MoE layers) them and the statistics
Activations: TypeAlias = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def moe_stats_size(config: ModelConfig) -> int:
    """The length of the MoE statistics passed between stages (0: a dense model)."""
    return 2 * config.moe_num_experts + 1 if config.moe else 0


def _first(x: Activations, f: Callable[[torch.Tensor], torch.Tensor]) -> Activations:
    """`f` of the hidden states, the MoE statistics (if any) passed on as they are."""
    if isinstance(x, tuple):
        return f(x[0]), x[1]
    return f(x)


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
    ep: TPGroup | None = None  # the expert-parallel group of the MoE layers' experts


class EmbeddingPipe(WithEmbeddings):
    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        self.add_embeddings(args.config, args.tp, args.vocab, args.sequence_parallel)
        self.moe_stats = moe_stats_size(args.config)
        init_weights(self, args.config, args.seed)
        if self.sequence_parallel:
            sum_replicated_gradients(self, args.tp)

    def model_name(self, name: str) -> str:
        return name

    def forward(self, input_ids: torch.Tensor) -> Activations:
        """(batch, seq) ids -> (batch, seq, hidden), or (batch, seq / tp, hidden); with MoE
        layers, paired with their (empty) statistics."""
        x = self.embed(input_ids, torch.arange(input_ids.shape[1], device=input_ids.device))
        if not self.moe_stats:
            return x
        # a leaf that takes a gradient, so that the engine can pass one back for it
        stats = torch.zeros(self.moe_stats, device=x.device, requires_grad=True)
        return x, stats


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

    def forward(self, x: Activations) -> Activations:
        """(batch, seq or seq / tp, hidden) -> (batch, seq, vocab / tp)."""
        return _first(x, self._logits)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        local = column_parallel_linear(
            x, self.embed_in.weight, None, self.tp, sequence_parallel=self.sequence_parallel
        )
        return softcap(local, self.cap)


def run_tied(module: nn.Module, x: Activations) -> Activations:
    """A tied layer after the first, run on its copy (DeepSpeed TiedLayerSpec's forward_fn: a
    function, which the engine neither saves nor loads: the copy follows the first stage's)."""
    return module(x)  # type: ignore[no-any-return]


class TransformerLayerPipe(nn.Module):
    """One block (named so that GPT-NeoX's `pipe_partition_method: type:transformer` finds it)."""

    def __init__(self, args: LayerArgs, index: int) -> None:
        super().__init__()
        config, tp = args.config, args.tp
        self.index = index
        self.block = Block(config, tp, index, sequence_parallel=args.sequence_parallel, ep=args.ep)
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

    def forward(self, x: Activations) -> Activations:
        """(batch, seq or seq / tp, hidden) -> the same; with MoE layers, paired with their
        statistics, this layer's added."""
        hidden, stats = x if isinstance(x, tuple) else (x, None)
        positions = torch.arange(hidden.shape[1] * self.shards, device=hidden.device)
        rope = self.rotary(positions) if self.rotary is not None else None
        mine: list[torch.Tensor] = []
        out = self.block(hidden, rope, positions, None, mine)
        if stats is None:
            return out  # type: ignore[no-any-return]
        return out, (stats + mine[0] if mine else stats)


class FinalNormPipe(nn.Module):
    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        self.final_layer_norm = build_norm(args.config)
        if args.sequence_parallel:
            sum_replicated_gradients(self, args.tp)

    def model_name(self, name: str) -> str:
        return name

    def forward(self, x: Activations) -> Activations:
        return _first(x, self.final_layer_norm)


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

    def forward(self, x: Activations) -> Activations:
        """(batch, seq or seq / tp, hidden) -> (batch, seq, vocab / tp)."""
        return _first(x, lambda h: softcap(self.embed_out(h), self.cap))


class ScorePipe(nn.Module):
    """hidden -> a reward model's score per position, (batch, seq) (`ModelConfig.value_head`:
    in place of the output layer; replicated on the tensor-parallel ranks)."""

    def __init__(self, args: LayerArgs) -> None:
        super().__init__()
        if args.sequence_parallel:
            raise ValueError("a value head (reward model) does not run under sequence_parallel")
        self.score = nn.Linear(args.config.hidden_size, 1, bias=False)
        init_weights(self, args.config, args.seed)  # as Transformer's: the same name, seed

    def model_name(self, name: str) -> str:
        return name

    def forward(self, x: Activations) -> Activations:
        return _first(x, lambda h: self.score(h).squeeze(-1))


def pipeline_specs(
    config: ModelConfig,
    tp: TPGroup,
    seed: int,
    padded_vocab: int | None = None,
    sequence_parallel: bool = False,
    ep: TPGroup | None = None,
) -> list[PipeLayer]:
    """Every layer, in order; a pipeline engine builds only the ones of its stage (DeepSpeed:
    `LayerSpec(cls, *args)`, `TiedLayerSpec` for a layer with a tie key). `padded_vocab` and
    `sequence_parallel` and `ep` as `Transformer`'s. A parameter's layer is `pipeline_layer`."""
    vocab = padded_vocab or config.padded_vocab(tp.size)
    args = LayerArgs(config, tp, seed, vocab, sequence_parallel and tp.size > 1, ep)
    blocks = [PipeLayer(TransformerLayerPipe, (args, i)) for i in range(config.num_layers)]
    if config.value_head:  # a reward model: the score head, nothing tied to the embedding
        return [
            PipeLayer(EmbeddingPipe, (args,)),
            *blocks,
            PipeLayer(FinalNormPipe, (args,)),
            PipeLayer(ScorePipe, (args,)),
        ]
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
    the output layer (an untied one: a tied output's weight is the embedding's, in layer 0) or
    a reward model's score head."""
    head, _, rest = name.partition(".")
    match head:
        case "layers":
            return 1 + int(rest.partition(".")[0])
        case "final_layer_norm":
            return config.num_layers + 1
        case "embed_out" | "score":
            return config.num_layers + 2
    return 0  # the token and position embeddings


class PipelineLoss:
    """The loss DeepSpeed's PipelineModule calls with (logits shard, labels), or with (logits
    shard, MoE statistics): then, with gradients enabled (training), plus the weighted auxiliary
    losses, as `Transformer.forward` computes them; each training call's language-model loss
    and auxiliary losses are kept (`records`) for metrics."""

    def __init__(self, tp: TPGroup, config: ModelConfig | None = None) -> None:
        self.tp, self.config = tp, config
        self.records: list[tuple[torch.Tensor, MoELosses]] = []

    def __call__(self, outputs: Activations, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, tuple):
            return next_token_loss(outputs, labels, self.tp)  # labels may hold IGNORE_INDEX
        logits, stats = outputs
        config = self.config
        assert config is not None, "MoE statistics reach a loss built without the config"
        loss = next_token_loss(logits, labels, self.tp)
        if not torch.is_grad_enabled():  # evaluation: the language model's loss alone
            return loss
        aux = MoELosses.of(stats, config.moe_layers, labels.numel(), config.moe_num_experts)
        self.records.append((loss.detach(), aux.detached()))
        return loss + moe_aux_loss(config, aux, loss.dtype)


def pipeline_loss(tp: TPGroup, config: ModelConfig | None = None) -> PipelineLoss:
    """The loss of a pipeline of `pipeline_specs(config, ...)` (`config` needed with MoE)."""
    return PipelineLoss(tp, config)


def layer_name_map(config: ModelConfig, layer_index: int) -> tuple[str, str]:
    """(prefix in the pipeline layer's state dict, prefix in the Transformer's) of the layer at
    `layer_index` (as `pipeline_layer` numbers them)."""
    if 1 <= layer_index <= config.num_layers:
        return "block.", f"layers.{layer_index - 1}."
    return "", ""
