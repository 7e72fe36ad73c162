"""Tensor-parallel layers (Shoeybi et al., 2019, "Megatron-LM: Training Multi-Billion Parameter
Language Models Using Model Parallelism").

A weight matrix is split over the ranks of a tensor-parallel group so that each rank holds one
slice and the ranks exchange activations, not weights:

- `ColumnParallelLinear` splits the output features: y_r = x A_r. Its input is replicated, so its
  backward all-reduces the input gradient (`copy_to_tp`).
- `RowParallelLinear` splits the input features: y = sum_r x_r B_r, an all-reduce in forward
  (`reduce_from_tp`). Column -> elementwise -> Row is an MLP with one all-reduce each way.
- `VocabParallelEmbedding` splits the vocabulary rows; each rank looks up the ids it owns and the
  partial embeddings are summed.
- `vocab_parallel_cross_entropy` computes the loss from vocabulary-sharded logits without ever
  gathering the full vocabulary; `next_token_loss` averages it over the labels that are not
  `IGNORE_INDEX` (padding, masked prompts).

Sequence parallelism (Korthikanti et al., 2022, "Reducing Activation Recomputation in Large
Transformer Models"), `sequence_parallel=True` on the layers: between the tensor-parallel regions
(norms, dropout, residual adds) each rank holds only its contiguous part of the sequence,
activations (..., seq / size, hidden) in rank order. The all-reduce of a region's output becomes
a reduce-scatter along the sequence (`reduce_scatter_sequence`: row-parallel output, vocabulary-
parallel embedding), and a column-parallel layer all-gathers its input along the sequence
(`column_parallel_linear`, which keeps only this rank's part of the input for the backward and
gathers it again there). A parameter every rank holds whole (norms, row-parallel biases, learned
positions) then sees only this rank's positions: `sum_replicated_gradients` sums its gradient
over the group as backward computes it. Dropout between the regions acts on different positions
on each rank, so the ranks must draw different random numbers there (without sequence
parallelism they must draw the same: the activations are replicated).

The group is a `TPGroup` handed to every layer at construction; nothing here reads or keeps global
parallel state. With `TPGroup.single()` no communication happens and the layers are plain
`nn.Linear` / `nn.Embedding` / `F.cross_entropy`.

Initialisation: the layers allocate their parameters and fill them with zeros, nothing more. The
model initialises each FULL matrix from its own seeded generator and copies `shard_weight(full)`
into every rank, so the numbers do not depend on the tensor-parallel size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TPGroup:
    """This rank's tensor-parallel group: the process group, this rank's index in it, its size."""

    group: dist.ProcessGroup | None
    rank: int
    size: int

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(
                f"TPGroup needs size >= 1 and 0 <= rank < size, got rank={self.rank}, "
                f"size={self.size}"
            )

    @classmethod
    def single(cls) -> TPGroup:
        """A group of one: every collective is the identity and nothing is communicated."""
        return cls(None, 0, 1)

    @classmethod
    def of(cls, group: dist.ProcessGroup | None) -> TPGroup:
        """This process's rank and the size of `group` (None: the default, world group)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "TPGroup.of needs torch.distributed initialised; call "
                "torch.distributed.init_process_group first, or use TPGroup.single()"
            )
        rank = dist.get_rank(group)
        if rank < 0:
            raise ValueError("TPGroup.of: this process is not a member of the given group")
        return cls(group, rank, dist.get_world_size(group))

    def divide(self, n: int, what: str) -> int:
        """n // size; a ValueError naming `what` when n is not a multiple of the group size."""
        if n % self.size != 0:
            raise ValueError(
                f"{what} ({n}) is not divisible by the tensor-parallel size ({self.size}); "
                f"choose a {what} that is a multiple of {self.size}"
            )
        return n // self.size


# ---------------------------------------------------------------------------------------------
# Raw collectives (no autograd). Each returns a new tensor and leaves its input untouched.


def _all_reduce(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    out = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, group=tp.group)
    return out


def _all_gather_last(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(tp.size)]
    dist.all_gather(parts, x, group=tp.group)
    return torch.cat(parts, dim=-1)  # (..., size * width), rank order


def _split_last(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    width = tp.divide(x.shape[-1], "last dimension")
    return x.narrow(-1, tp.rank * width, width).contiguous()


def sequence_part(x: torch.Tensor, tp: TPGroup, dim: int = -2) -> torch.Tensor:
    """This rank's contiguous part of dim `dim` (the sequence) of a tensor every rank holds whole,
    a view; a ValueError when the length is not a multiple of the group size."""
    length = tp.divide(x.shape[dim], "sequence length")
    return x.narrow(dim, tp.rank * length, length)


# The sequence collectives exchange along dim -2 of (..., seq, features). The tensor collectives
# split dim 0 of a contiguous buffer, so the sequence moves first for the exchange and back after.
# torch 2.13 renamed them *_single (the old names warn); older torch has the old names only.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _all_gather_sequence(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """(..., seq / size, f) on each rank -> (..., seq, f), the parts in rank order."""
    local = x.movedim(-2, 0).contiguous()  # (seq / size, ..., f)
    out = local.new_empty((tp.size * local.shape[0], *local.shape[1:]))
    _all_gather_single(out, local, group=tp.group)
    return out.movedim(0, -2).contiguous()  # (..., seq, f)


def _reduce_scatter_sequence(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """(..., seq, f) summed over the group -> this rank's part, (..., seq / size, f)."""
    full = x.movedim(-2, 0).contiguous()  # (seq, ..., f)
    length = tp.divide(full.shape[0], "sequence length")
    out = full.new_empty((length, *full.shape[1:]))
    _reduce_scatter_single(out, full, group=tp.group)
    return out.movedim(0, -2).contiguous()  # (..., seq / size, f)


# ---------------------------------------------------------------------------------------------
# Autograd-aware collectives: each forward is paired with its adjoint in backward.


Exchange = Callable[[torch.Tensor, TPGroup], torch.Tensor]


def _identity(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    return x


class _Collective(torch.autograd.Function):
    """`forward(x, tp)` in forward, its adjoint `backward(grad, tp)` in backward."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, tp: TPGroup, forward: Exchange, backward: Exchange
    ) -> torch.Tensor:
        ctx.tp, ctx.adjoint = tp, backward
        return forward(x, tp)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return ctx.adjoint(grad, ctx.tp), None, None, None


def _collective(
    x: torch.Tensor, tp: TPGroup, forward: Exchange, backward: Exchange
) -> torch.Tensor:
    return x if tp.size == 1 else cast(torch.Tensor, _Collective.apply(x, tp, forward, backward))


class _GatherSequenceLinear(torch.autograd.Function):
    """F.linear(gather_sequence(x), weight, bias), saving only this rank's part of x: the
    backward gathers it again for the weight's gradient (Korthikanti et al., Section 4.2.3), so
    a column-parallel layer's whole-sequence input is never kept."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tp: TPGroup
    ) -> torch.Tensor:
        ctx.tp, ctx.has_bias = tp, bias is not None
        ctx.save_for_backward(x, weight)
        return F.linear(_all_gather_sequence(x, tp), weight, bias)  # (..., seq, out)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_x = _reduce_scatter_sequence(grad @ weight, ctx.tp) if need_x else None
        tokens = grad.flatten(0, -2)  # (batch * seq, out)
        grad_weight = grad_bias = None
        if need_weight:
            gathered = _all_gather_sequence(x, ctx.tp).flatten(0, -2)  # (batch * seq, in)
            grad_weight = tokens.T @ gathered  # (out, in)
        if ctx.has_bias and need_bias:
            grad_bias = tokens.sum(dim=0)
        return grad_x, grad_weight, grad_bias, None


def copy_to_tp(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: identity. Backward: all-reduce (sum) of the gradient over the group."""
    return _collective(x, tp, _identity, _all_reduce)


def reduce_from_tp(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: all-reduce (sum) over the group. Backward: identity."""
    return _collective(x, tp, _all_reduce, _identity)


def all_reduce_both_ways(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: all-reduce (sum). Backward: all-reduce of the gradient (every rank's result
    depends on every rank's input and feeds a different computation on each rank)."""
    return _collective(x, tp, _all_reduce, _all_reduce)


def gather_from_tp(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: all-gather along the last dim in rank order. Backward: this rank's slice."""
    return _collective(x, tp, _all_gather_last, _split_last)


def scatter_to_tp(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: this rank's slice of the last dim. Backward: all-gather of the gradient."""
    return _collective(x, tp, _split_last, _all_gather_last)


def gather_sequence(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: all-gather of the ranks' parts of the sequence (dim -2) in rank order,
    (..., seq / size, f) -> (..., seq, f). Backward: reduce-scatter of the gradient (the sum over
    the group, this rank's part of the sequence)."""
    return _collective(x, tp, _all_gather_sequence, _reduce_scatter_sequence)


def reduce_scatter_sequence(x: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """Forward: the sum over the group, this rank's part of the sequence (dim -2),
    (..., seq, f) -> (..., seq / size, f). Backward: all-gather of the gradient."""
    return _collective(x, tp, _reduce_scatter_sequence, _all_gather_sequence)


def column_parallel_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tp: TPGroup,
    *,
    sequence_parallel: bool = False,
) -> torch.Tensor:
    """x W^T + b with this rank's rows of W. x is replicated, (..., seq, in), and its gradient
    all-reduced; under sequence parallelism it is this rank's part, (..., seq / size, in),
    gathered along the sequence (only the part is kept for backward) and its gradient
    reduce-scattered. -> (..., seq, rows of W), the whole sequence either way."""
    if sequence_parallel and tp.size > 1:
        return cast(torch.Tensor, _GatherSequenceLinear.apply(x, weight, bias, tp))
    return F.linear(copy_to_tp(x, tp), weight, bias)


def sum_replicated_gradients(module: nn.Module, tp: TPGroup) -> None:
    """Sum the gradient of every parameter of `module` that each rank holds whole (`shard_spec`
    None: norms, row-parallel biases, learned positions) over the group, as backward computes it.

    Under sequence parallelism such a parameter acts on this rank's part of the sequence only, so
    each rank's gradient is a partial sum. A hook on the parameter completes it before the
    gradient is accumulated, so DeepSpeed (ZeRO 0-2, pipelines) reduces, measures and clips the
    whole gradient, identical on every rank of the group (gradient norms count it once, as
    `model_parallel` False says). Register once per parameter: each registration sums again.
    """
    if tp.size == 1:
        return
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if param.requires_grad and shard_spec(sub, name) is None:
                param.register_hook(functools.partial(_all_reduce, tp=tp))


# ---------------------------------------------------------------------------------------------
# Sharding full tensors.


def shard(full: torch.Tensor, tp: TPGroup, dim: int, chunks: int = 1) -> torch.Tensor:
    """This rank's part of a full tensor along `dim`.

    With chunks > 1 the dim is first cut into `chunks` equal blocks and the rank takes its slice
    of EACH block, concatenated (so that a gated MLP's [up | gate] weight gives each rank matching
    halves). Returns a contiguous copy (autograd flows through it; call it under `torch.no_grad()`
    when copying into parameters).
    """
    dim = dim % full.dim()
    length = full.shape[dim]
    if chunks < 1 or length % chunks != 0:
        raise ValueError(f"cannot cut dim {dim} of length {length} into {chunks} equal chunks")
    width = tp.divide(length // chunks, f"chunk length along dim {dim}")
    blocks = full.chunk(chunks, dim=dim)
    return torch.cat([b.narrow(dim, tp.rank * width, width) for b in blocks], dim=dim)


def _chunk_major(x: torch.Tensor, size: int, chunks: int) -> torch.Tensor:
    """Reorder a gathered last dim from [rank][chunk][slice] to the full [chunk][rank][slice]."""
    width = x.shape[-1] // (size * chunks)
    per_rank = x.unflatten(-1, (size, chunks, width))  # (..., size, chunks, width)
    return per_rank.transpose(-3, -2).flatten(-3)  # (..., chunks * size * width)


# ---------------------------------------------------------------------------------------------
# Layers.


class ColumnParallelLinear(nn.Module):
    """y = x A^T + b with A's output features (rows) split over the group.

    Each rank holds `shard(A, tp, dim=0, chunks)`. Without `gather_output` the output stays
    sharded, (..., out_features / size), ready for an elementwise op and a `RowParallelLinear`.
    With it, the output is all-gathered and put back in the full layer's feature order (also when
    chunks > 1). With `sequence_parallel` the input is this rank's part of the sequence,
    (..., seq / size, in_features), gathered here; the output covers the whole sequence.
    Parameters start at zero; copy `shard_weight(full)` in.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        tp: TPGroup,
        *,
        bias: bool = True,
        chunks: int = 1,
        gather_output: bool = False,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        if chunks < 1 or out_features % chunks != 0:
            raise ValueError(f"out_features ({out_features}) must split into {chunks} chunks")
        what = "ColumnParallelLinear out_features" + (f" / {chunks} chunks" if chunks > 1 else "")
        tp.divide(out_features // chunks, what)
        local_out = out_features // tp.size
        self.in_features, self.out_features = in_features, out_features
        self.tp, self.chunks, self.gather_output = tp, chunks, gather_output
        self.sequence_parallel = sequence_parallel and tp.size > 1
        self.weight = nn.Parameter(torch.zeros(local_out, in_features))
        self.bias = nn.Parameter(torch.zeros(local_out)) if bias else None

    def shard_weight(self, full_weight: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the full (out_features, in_features) weight."""
        return shard(full_weight, self.tp, dim=0, chunks=self.chunks)

    def shard_bias(self, full_bias: torch.Tensor) -> torch.Tensor:
        """This rank's entries of the full (out_features,) bias."""
        return shard(full_bias, self.tp, dim=0, chunks=self.chunks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., seq, in_features), or this rank's (..., seq / size, in_features) under
        sequence parallelism -> (..., seq, out_features / size), or (..., seq, out_features)
        gathered."""
        y = column_parallel_linear(
            x, self.weight, self.bias, self.tp, sequence_parallel=self.sequence_parallel
        )  # (..., seq, out_features / size)
        if not self.gather_output or self.tp.size == 1:
            return y
        y = gather_from_tp(y, self.tp)  # (..., out_features), rank-major
        return _chunk_major(y, self.tp.size, self.chunks) if self.chunks > 1 else y

    def extra_repr(self) -> str:
        return _linear_repr(self, "chunks", "gather_output")


class RowParallelLinear(nn.Module):
    """y = x B^T + b with B's input features (columns) split over the group.

    Each rank holds `shard(B, tp, dim=1)` and a full copy of the bias, which is added once, after
    the partial products are summed. With `input_is_parallel` the input is already this rank's
    slice of the features (the output of a `ColumnParallelLinear`); otherwise it is full and
    each rank takes its slice. With `sequence_parallel` the sum is reduce-scattered: the output
    is this rank's part of the sequence, (..., seq / size, out_features), and the bias, added
    there, sees only those positions (see `sum_replicated_gradients`). Parameters start at zero;
    copy `shard_weight(full)` in.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        tp: TPGroup,
        *,
        bias: bool = True,
        input_is_parallel: bool = True,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        local_in = tp.divide(in_features, "RowParallelLinear in_features")
        if sequence_parallel and not input_is_parallel:
            raise ValueError("RowParallelLinear with sequence_parallel needs input_is_parallel")
        self.in_features, self.out_features = in_features, out_features
        self.tp, self.input_is_parallel = tp, input_is_parallel
        self.sequence_parallel = sequence_parallel and tp.size > 1
        self.weight = nn.Parameter(torch.zeros(out_features, local_in))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def shard_weight(self, full_weight: torch.Tensor) -> torch.Tensor:
        """This rank's columns of the full (out_features, in_features) weight."""
        return shard(full_weight, self.tp, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., seq, in_features / size) or (..., seq, in_features) -> (..., seq,
        out_features), or this rank's (..., seq / size, out_features) under sequence
        parallelism."""
        if self.tp.size == 1:  # a plain linear layer: one fused matmul + bias
            return F.linear(x, self.weight, self.bias)
        if not self.input_is_parallel:
            x = scatter_to_tp(x, self.tp)  # (..., in_features / size)
        partial = F.linear(x, self.weight)  # (..., seq, out_features), this rank's share
        if self.sequence_parallel:
            y = reduce_scatter_sequence(partial, self.tp)  # (..., seq / size, out_features)
        else:
            y = reduce_from_tp(partial, self.tp)  # (..., seq, out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return _linear_repr(self, "input_is_parallel")


def _linear_repr(layer: ColumnParallelLinear | RowParallelLinear, *settings: str) -> str:
    """A parallel linear layer's sizes, group size, `settings` and sequence parallelism."""
    shown = [f"in_features={layer.in_features}", f"out_features={layer.out_features}"]
    shown += [f"tp_size={layer.tp.size}"]
    shown += [f"{name}={getattr(layer, name)}" for name in (*settings, "sequence_parallel")]
    return ", ".join([*shown, f"bias={layer.bias is not None}"])


class VocabParallelEmbedding(nn.Module):
    """An embedding table whose rows (the vocabulary) are split over the group.

    This rank owns ids [vocab_start, vocab_end). Ids it does not own contribute zeros, and the
    partial embeddings are summed over the group, so every rank ends with the full lookup; with
    `sequence_parallel` the sum is reduce-scattered and each rank ends with its part of the
    sequence. The weight starts at zero; copy `shard_weight(full)` in.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        tp: TPGroup,
        *,
        sequence_parallel: bool = False,
    ) -> None:
        super().__init__()
        local_vocab = tp.divide(num_embeddings, "VocabParallelEmbedding num_embeddings")
        self.num_embeddings, self.embedding_dim, self.tp = num_embeddings, embedding_dim, tp
        self.sequence_parallel = sequence_parallel and tp.size > 1
        self.vocab_start = tp.rank * local_vocab
        self.vocab_end = self.vocab_start + local_vocab
        self.weight = nn.Parameter(torch.zeros(local_vocab, embedding_dim))

    def shard_weight(self, full_weight: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the full (num_embeddings, embedding_dim) table."""
        return shard(full_weight, self.tp, dim=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (..., seq) -> (..., seq, embedding_dim), or this rank's (..., seq / size,
        embedding_dim) under sequence parallelism."""
        if self.tp.size == 1:
            return F.embedding(ids, self.weight)
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        local_ids = (ids - self.vocab_start).masked_fill(outside, 0)
        partial = F.embedding(local_ids, self.weight)  # (..., embedding_dim)
        partial = partial.masked_fill(outside.unsqueeze(-1), 0.0)
        if self.sequence_parallel:
            return reduce_scatter_sequence(partial, self.tp)
        return reduce_from_tp(partial, self.tp)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
            f"tp_size={self.tp.size}, vocab=[{self.vocab_start}, {self.vocab_end}), "
            f"sequence_parallel={self.sequence_parallel}"
        )


# ---------------------------------------------------------------------------------------------
# Cross entropy over vocabulary-sharded logits.

IGNORE_INDEX = -100  # a label without loss (GPT-NeoX's, Hugging Face's and F.cross_entropy's)


def _all_reduce_(x: torch.Tensor, tp: TPGroup, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
    if tp.size > 1:
        dist.all_reduce(x, op=op, group=tp.group)
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Cross entropy over a vocabulary sharded by rank, with one large buffer: the forward turns
    the shifted logits into the softmax in place and saves it; the backward turns that saved
    softmax into the gradient in place (so the graph can be run backward once)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, tp: TPGroup) -> torch.Tensor:
        local = logits.float()  # (..., vocab / size); no copy when already float32
        width = local.shape[-1]
        global_max = _all_reduce_(local.amax(dim=-1), tp, dist.ReduceOp.MAX)  # (...)
        local_target = target - tp.rank * width
        owned = (local_target >= 0) & (local_target < width)  # (...)
        index = local_target.masked_fill(~owned, 0).unsqueeze(-1)  # (..., 1)
        picked = local.gather(-1, index).squeeze(-1).masked_fill(~owned, 0.0)
        target_logit = _all_reduce_(picked, tp, dist.ReduceOp.SUM) - global_max  # (...)
        probs = torch.sub(local, global_max.unsqueeze(-1)).exp_()  # the one large buffer
        sum_exp = _all_reduce_(probs.sum(dim=-1), tp, dist.ReduceOp.SUM)  # (...)
        probs.div_(sum_exp.unsqueeze(-1))  # softmax over the whole vocabulary, this shard
        ctx.save_for_backward(probs, index, owned)
        ctx.logits_dtype = logits.dtype
        return sum_exp.log() - target_logit

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad, index, owned = ctx.saved_tensors  # grad is the saved softmax, reused in place
        grad.scatter_add_(-1, index, -owned.to(grad.dtype).unsqueeze(-1))  # - one_hot(target)
        grad.mul_(grad_loss.unsqueeze(-1).to(grad.dtype))
        return grad.to(ctx.logits_dtype), None, None


def vocab_parallel_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, tp: TPGroup
) -> torch.Tensor:
    """Per-token cross entropy from logits sharded over the vocabulary, never gathered whole.

    Each rank holds its contiguous block of the vocabulary in the last dim of `logits`. The max
    and the sum of exponentials are all-reduced, and the target's logit is taken on the rank that
    owns it. The backward is analytic: softmax minus one-hot, on this rank's shard. At size 1 this
    equals `F.cross_entropy(..., reduction="none", ignore_index=IGNORE_INDEX)` to fp32 rounding.
    Computes in float32 whatever the logits dtype; the logits' gradient comes back in their dtype.

    logits (..., vocab / size), target (...) int64 in [0, vocab) or IGNORE_INDEX -> loss (...)
    float32, 0 (and no gradient) where the target is IGNORE_INDEX.
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must agree on every "
            "dimension but the last (the vocabulary)"
        )
    # An ignored target is owned by no rank: its loss is finite, and zeroed here.
    loss = cast(torch.Tensor, _VocabParallelCrossEntropy.apply(logits, target, tp))
    return loss.masked_fill(target == IGNORE_INDEX, 0.0)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    """The training loss: the mean cross entropy over the positions whose label is not
    IGNORE_INDEX (0 when every one is), from vocabulary-sharded logits.

    logits (batch, seq, vocab / size), labels (batch, seq) -> scalar float32.
    """
    per_token = vocab_parallel_cross_entropy(logits, labels, tp)  # (batch, seq), 0 where ignored
    kept = (labels != IGNORE_INDEX).sum()
    masked_mean = per_token.sum() / kept.clamp(min=1)
    # Nothing ignored: exactly `mean()` as before (on GPUs `mean` multiplies by 1 / n instead).
    return torch.where(kept == labels.numel(), per_token.mean(), masked_mean)


def shard_spec(module: nn.Module, param_name: str) -> tuple[int, int] | None:
    """How a parameter of `module` is split over the model-parallel slices (the tensor-parallel
    ranks; a mixture's experts also over the expert-parallel ones): (dim, chunks), or None when
    every rank holds the whole parameter."""
    if isinstance(module, ColumnParallelLinear):
        return (0, module.chunks)
    if isinstance(module, RowParallelLinear):
        return (1, 1) if param_name == "weight" else None
    if isinstance(module, VocabParallelEmbedding):
        return (0, 1)
    if getattr(module, "sharded_features", False):  # a norm over features the ranks split
        return (0, 1)
    if getattr(module, "sharded_experts", False):  # a mixture's experts, split by expert over
        return (0, 1)  # the tensor-parallel ranks, or the expert-parallel ones
    return None


def unshard(pieces: list[torch.Tensor], dim: int, chunks: int = 1) -> torch.Tensor:
    """The full tensor from every rank's shard, in rank order: the inverse of `shard`."""
    blocks = [piece.chunk(chunks, dim) for piece in pieces]
    return torch.cat([torch.cat([b[c] for b in blocks], dim) for c in range(chunks)], dim)
