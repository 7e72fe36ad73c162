"""Mixture-of-experts feed-forward block: a router sends each token to top_k of num_experts MLPs.

Sparsely-gated MoE (Shazeer et al., 2017, "Outrageously Large Neural Networks"), as Switch
Transformer (Fedus et al., 2021) and Mixtral (Jiang et al., 2024) use it, with the dropless
dispatch of MegaBlocks (Gale et al., 2022): no capacity factor, every token reaches all of its
top_k experts. y_t = sum_{e in topk(t)} w_{t,e} * expert_e(x_t) (+ the shared expert).

Routers (`router_type`):
- "softmax_topk": p = softmax(logits) in float32, the top_k of p, renormalised to sum 1 when
  `normalize_topk` (Mixtral; Qwen2-MoE's `norm_topk_prob`, default false there).
- "topk": GPT-NeoX's dropless TopKTokenChoiceRouter: softmax in the logits' dtype, top_k, never
  renormalised.
- "sinkhorn": GPT-NeoX's SinkhornRouter (Clark et al., 2022, "Unified Scaling Laws for Routed
  Language Models"): in training the experts are chosen by top_k of the Sinkhorn-balanced
  float32 scores exp(logits) and weighted by sigmoid(logits) (top_k 1) or softmax(logits);
  in evaluation plain top_k of those weights.
Jitter (`jitter_eps`, GPT-NeoX's moe_jitter_eps): in training the router (only) reads x times
uniform noise in [1 - eps, 1 + eps].

Dispatch: the (token, k) slots are sorted by expert (a stable sort, so the order is fixed), each
expert runs once on its contiguous slice, and the outputs are put back in slot order and summed
over k in a fixed order: deterministic on every device, no atomics.

Auxiliary losses, unweighted (the training loop owns the coefficients):
- load balancing (Switch eq. 4-6, as transformers' `load_balancing_loss_func` computes it):
  num_experts * sum_e f_e * P_e, f_e = (slots routed to e) / tokens, so sum_e f_e = top_k
  (MegaBlocks, and GPT-NeoX's megablocks path, also divide by top_k), P_e = the mean router
  probability; in float32 when `lbl_in_fp32`.
- router z-loss (Zoph et al., 2022, "ST-MoE"): mean over tokens of logsumexp(logits)^2.

Weights: experts stacked (experts, in, out); gated experts hold [up | gate] along `out`, GPT-NeoX's
order (Mixtral's gate_up_proj is [gate | up], (experts, out, in)). Parameters are allocated as
zeros; the model's initialisation fills them (`neox_model.initialization`: the router, the
experts' input side and the shared expert's gate by `init_method`, their output side by
`output_layer_init_method`). In a model, layer i is an MoE layer as `ModelConfig.is_moe_layer`
says and `Transformer` adds the auxiliary losses to the training loss (`MoELosses`). Under
tensor parallelism the experts are split over the ranks (GPT-NeoX's layout; see `MoE`); in a
pipeline the statistics travel between stages (`neox_model.pipeline`).

Expert parallelism (`ep`, a group carved from the data-parallel ranks, as DeepSpeed-MoE and
Megatron-Core lay it out): each rank holds num_experts / ep experts (rank r experts r * n ..
(r + 1) * n - 1) and routes its own tokens; the token-slots, sorted by expert, go to the ranks
holding their experts in one all-to-all and come back in another (`all_to_all_rows`, whose
backward is the reverse exchange). A rank's expert gradients then cover the slots every rank of
the group sent it; the training loop reduces them over the ranks holding the same experts, not
over the whole data-parallel group. Not here yet: experts split over tensor-parallel and expert-
parallel ranks at once, sequence parallelism, grouped GEMM kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
import torch.distributed as dist
from torch import nn

from neox_model.config import (
    GATED_ACTIVATIONS,
    Activation,
    ModelConfig,
    MoERouterType,
    check_moe_settings,
)
from neox_model.mlp import activation_function
from neox_model.tensor_parallel import TPGroup, copy_to_tp, reduce_from_tp

RouterType = MoERouterType
SINKHORN_TOLERANCE = 1e-4  # GPT-NeoX's
SINKHORN_MAX_ITERATIONS = 1000


@dataclass(frozen=True)
class MoEConfig:
    """The mixture-of-experts hyper-parameters of one MoE layer."""

    num_experts: int
    top_k: int = 2
    router_type: RouterType = "softmax_topk"
    normalize_topk: bool | None = None  # None: the router's own (softmax_topk yes, others no)
    jitter_eps: float | None = None
    lbl_in_fp32: bool = True
    shared_expert_ffn_size: int = 0  # 0: no shared expert (Qwen2-MoE's shared expert + gate)

    def __post_init__(self) -> None:
        check_moe_settings(
            self.num_experts,
            self.top_k,
            self.router_type,
            self.normalize_topk,
            self.jitter_eps,
            self.shared_expert_ffn_size,
        )

    @property
    def renormalize(self) -> bool:
        if self.normalize_topk is None:
            return self.router_type == "softmax_topk"
        return self.normalize_topk


def moe_config_of(config: ModelConfig) -> MoEConfig:
    """The MoE layers' hyper-parameters of a model config (its `moe_*` keys)."""
    return MoEConfig(
        num_experts=config.moe_num_experts,
        top_k=config.moe_top_k,
        router_type=config.moe_router_type,
        normalize_topk=config.moe_normalize_topk,
        jitter_eps=config.moe_jitter_eps,
        lbl_in_fp32=config.moe_lbl_in_fp32,
        shared_expert_ffn_size=config.moe_shared_expert_intermediate_size,
    )


class MoEOutput(NamedTuple):
    output: torch.Tensor  # (..., hidden), the input's shape
    load_balancing_loss: torch.Tensor  # () float32 when lbl_in_fp32
    z_loss: torch.Tensor  # () float32
    expert_share: torch.Tensor  # (experts,) share of the token-slots per expert, no gradient
    router_logits: torch.Tensor  # (tokens, experts)
    expert_counts: torch.Tensor  # (experts,) token-slots routed to each expert, no gradient
    router_probs: torch.Tensor  # (tokens, experts) softmax(logits), float32 when lbl_in_fp32


class _AllToAll(torch.autograd.Function):
    """Rows exchanged over a group: in_rows[p] rows go to rank p, out_rows[p] come from it; the
    backward sends the gradients back the same way reversed."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        group: TPGroup,
        out_rows: list[int],
        in_rows: list[int],
    ) -> torch.Tensor:
        ctx.group, ctx.out_rows, ctx.in_rows = group, out_rows, in_rows  # type: ignore[attr-defined]
        return _exchange(x, group, out_rows, in_rows)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None]:
        group, out_rows, in_rows = ctx.group, ctx.out_rows, ctx.in_rows  # type: ignore[attr-defined]
        return _exchange(grad, group, in_rows, out_rows), None, None, None


def _exchange(
    x: torch.Tensor, group: TPGroup, out_rows: list[int], in_rows: list[int]
) -> torch.Tensor:
    out = x.new_empty((sum(out_rows), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), out_rows, in_rows, group=group.group)
    return out


def all_to_all_rows(
    x: torch.Tensor, group: TPGroup, out_rows: list[int], in_rows: list[int]
) -> torch.Tensor:
    """x (sum(in_rows), ...): rows in_rows[0] to rank 0 of `group`, the next in_rows[1] to rank
    1, ... -> (sum(out_rows), ...), the out_rows[p] rows rank p sent here, in rank order.
    Differentiable (the backward is the reverse exchange)."""
    return cast(torch.Tensor, _AllToAll.apply(x, group, out_rows, in_rows))


class Experts(nn.Module):
    """num_experts MLPs with stacked weights: w_in (experts, hidden, inner or 2 * inner),
    w_out (experts, inner, hidden), optional biases. Split over a group (tensor-parallel `tp`,
    or expert-parallel `ep`), each rank holds num_experts / size of them, rank r experts
    r * n .. (r + 1) * n - 1, every tensor split along its first dimension (`sharded_experts`;
    `expert_parallel`: the split is over the expert-parallel ranks); a shared expert (no group)
    is whole on each."""

    def __init__(
        self,
        num_experts: int,
        hidden: int,
        inner: int,
        activation: Activation,
        bias: bool,
        tp: TPGroup | None = None,
        ep: TPGroup | None = None,
    ) -> None:
        """`num_experts`: those this rank holds; `tp` / `ep`: the group they are split over."""
        super().__init__()
        if tp is not None and ep is not None:
            raise ValueError("experts split over one group: tensor-parallel or expert-parallel")
        self.tp, self.ep = tp, ep
        self.sharded_experts = tp is not None or ep is not None  # split over model slices
        self.expert_parallel = ep is not None
        self.gated = activation in GATED_ACTIVATIONS
        self.act = activation_function(activation)
        width = 2 * inner if self.gated else inner
        self.w_in = nn.Parameter(torch.zeros(num_experts, hidden, width))
        self.w_out = nn.Parameter(torch.zeros(num_experts, inner, hidden))
        self.b_in = nn.Parameter(torch.zeros(num_experts, width)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(num_experts, hidden)) if bias else None

    @property
    def split(self) -> TPGroup:
        """The group the experts are split over (a group of one when whole)."""
        return self.tp or self.ep or TPGroup.single()

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on x (n, hidden) -> (n, hidden)."""
        h = x @ self.w_in[e]  # (n, inner or 2 * inner)
        if self.b_in is not None:
            h = h + self.b_in[e]
        if self.gated:
            up, gate = h.chunk(2, dim=-1)
            h = up * self.act(gate)
        else:
            h = self.act(h)
        y = h @ self.w_out[e]  # (n, hidden)
        return y + self.b_out[e] if self.b_out is not None else y

    def forward(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x (slots, hidden) sorted by expert, counts[e] rows for expert e -> (slots, hidden)."""
        pieces = x.split(counts)
        return torch.cat([self.expert(e, piece) for e, piece in enumerate(pieces)])


def sinkhorn(cost: torch.Tensor, tol: float = SINKHORN_TOLERANCE) -> torch.Tensor:
    """GPT-NeoX's (Megatron's) Sinkhorn balancing of exp(cost) (tokens, experts) towards equal
    row and column sums, stopping when the column scaling moves by less than `tol`."""
    cost = torch.exp(cost)
    d0 = torch.ones(cost.size(0), device=cost.device, dtype=cost.dtype)
    d1 = torch.ones(cost.size(1), device=cost.device, dtype=cost.dtype)
    eps = 1e-8
    for _ in range(SINKHORN_MAX_ITERATIONS):
        d1_old = d1
        d0 = (1 / d0.size(0)) / (torch.sum(d1 * cost, 1) + eps)
        d1 = (1 / d1.size(0)) / (torch.sum(d0.unsqueeze(1) * cost, 0) + eps)
        if torch.mean(torch.abs(d1_old - d1)) <= tol:
            break
    return d1 * cost * d0.unsqueeze(1)


def route(
    logits: torch.Tensor, config: MoEConfig, training: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits (tokens, experts) -> weights (tokens, top_k), experts (tokens, top_k)."""
    k = config.top_k
    match config.router_type:
        case "softmax_topk":
            weights, chosen = torch.topk(torch.softmax(logits.float(), dim=-1), k, dim=-1)
            if config.renormalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            return weights, chosen
        case "topk":
            return torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        case "sinkhorn":
            if k == 1:
                scores = torch.sigmoid(logits)
            else:
                scores = torch.softmax(logits, dim=-1, dtype=torch.float32).type_as(logits)
            if not training:
                return torch.topk(scores, k, dim=-1)
            with torch.no_grad():
                chosen = torch.topk(sinkhorn(logits.float()), k, dim=-1).indices
            return torch.gather(scores, 1, chosen), chosen
    raise AssertionError(config.router_type)


def load_balancing_loss(probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """num_experts * sum_e (counts_e / tokens) * mean_t probs_{t,e}; probs (tokens, experts)."""
    tokens, num_experts = probs.shape
    f = counts.to(probs.dtype) / tokens  # (experts,), sums to top_k
    return num_experts * torch.sum(f * probs.mean(dim=0))


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


class MoE(nn.Module):
    """The MoE feed-forward block: router, experts, optional shared expert with a sigmoid gate.

    With a tensor-parallel group `tp` (GPT-NeoX's layout: experts split over the tensor-
    parallel ranks) every rank routes every token alike (the router, and any shared expert, are
    whole on each rank), runs its own experts on the token-slots sent to them, and the partial
    outputs are summed over the group. The gradients of the experts' input and of the routing
    weights are summed over the group too (each rank's covers its own experts' slots); those of
    the router's other uses (the auxiliary losses) and of the shared expert are each rank's own,
    the same on every rank.

    With an expert-parallel group `ep` each rank routes its own tokens and exchanges the token-
    slots with the ranks holding their experts (two all-to-alls, see the module's docstring);
    the router and any shared expert are each rank's own, as under data parallelism."""

    def __init__(
        self,
        config: MoEConfig,
        hidden: int,
        ffn_size: int,
        activation: Activation,
        bias: bool,
        tp: TPGroup | None = None,
        ep: TPGroup | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tp = tp = tp or TPGroup.single()
        self.ep = ep = ep or TPGroup.single()
        if tp.size > 1 and ep.size > 1:
            raise ValueError(
                "moe experts split over tensor-parallel and expert-parallel ranks at once are "
                "not supported yet: use model_parallel_size 1 with expert parallelism"
            )
        split, what = (ep, "expert-parallel") if ep.size > 1 else (tp, "tensor-parallel")
        if config.num_experts % split.size:
            raise ValueError(
                f"moe_num_experts {config.num_experts} do not split over {split.size} {what} "
                "ranks: use a size that divides it"
            )
        self.local_experts = config.num_experts // split.size
        self.router = nn.Linear(hidden, config.num_experts, bias=False)
        nn.init.zeros_(self.router.weight)
        self.experts = Experts(
            self.local_experts,
            hidden,
            ffn_size,
            activation,
            bias,
            tp if ep.size == 1 else None,
            ep if ep.size > 1 else None,
        )
        self.shared_expert: Experts | None = None
        self.shared_expert_gate: nn.Linear | None = None
        if config.shared_expert_ffn_size:
            size = config.shared_expert_ffn_size
            self.shared_expert = Experts(1, hidden, size, activation, bias)
            self.shared_expert_gate = nn.Linear(hidden, 1, bias=False)
            nn.init.zeros_(self.shared_expert_gate.weight)

    def router_logits(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (tokens, hidden) -> (tokens, experts); in training with jitter the router reads
        x * U(1 - eps, 1 + eps) drawn from `generator`."""
        eps = self.config.jitter_eps
        if self.training and eps:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x * (1.0 - eps + noise * (2.0 * eps))
        return self.router(x)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MoEOutput:
        """x (..., hidden) -> MoEOutput with output (..., hidden)."""
        cfg = self.config
        flat = x.reshape(-1, x.shape[-1])  # (tokens, hidden)
        logits = self.router_logits(flat, generator)  # (tokens, experts)
        weights, chosen = route(logits, cfg, self.training)  # (tokens, top_k) each
        slot_expert = chosen.flatten()  # (tokens * top_k,), slot t * top_k + j
        order = torch.argsort(slot_expert, stable=True)  # slots grouped by expert
        counts = torch.bincount(slot_expert, minlength=cfg.num_experts)  # (experts,)
        if self.ep.size > 1:
            mine, slots_out = order, self._exchanged(flat[order // cfg.top_k], counts)
        else:
            tp, n = self.tp, self.local_experts
            local = counts[tp.rank * n : (tp.rank + 1) * n].tolist()  # this rank's experts' slots
            start = int(counts[: tp.rank * n].sum())
            mine = order[start : start + sum(local)]  # their slots, grouped by expert
            if tp.size > 1:  # each rank's part of these gradients covers its own slots: summed
                flat_in, weights = copy_to_tp(flat, tp), copy_to_tp(weights, tp)
            else:
                flat_in = flat
            slots_out = self.experts(flat_in[mine // cfg.top_k], local)  # (my slots, hidden)
        slots = slots_out.new_zeros(slot_expert.numel(), x.shape[-1])
        unsorted = slots.index_copy(0, mine, slots_out)  # slot order; others' slots 0
        weighted = unsorted * weights.reshape(-1, 1)  # in the weights' dtype (float32)
        y = weighted.view(-1, cfg.top_k, x.shape[-1]).sum(dim=1).to(x.dtype)  # (tokens, hidden)
        if self.tp.size > 1:
            y = reduce_from_tp(y, self.tp)
        y = y + self.shared(flat)
        probs = torch.softmax(logits.float() if cfg.lbl_in_fp32 else logits, dim=-1)
        return MoEOutput(
            output=y.view(x.shape),
            load_balancing_loss=load_balancing_loss(probs, counts),
            z_loss=z_loss(logits),
            expert_share=(counts.float() / slot_expert.numel()).detach(),
            router_logits=logits,
            expert_counts=counts.detach(),
            router_probs=probs,
        )

    def _exchanged(self, sorted_in: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert parallelism: this rank's token-slots `sorted_in` (slots, hidden), grouped by
        expert with counts[e] rows for expert e, through their experts on whichever ranks hold
        them -> (slots, hidden) in the same order."""
        ep, n = self.ep, self.local_experts
        per_rank = counts.view(ep.size, n)  # [rank p, p's expert j]: slots this rank sends
        received = torch.empty_like(per_rank)  # [source s, my expert j]: slots s sends here
        dist.all_to_all_single(received, per_rank, group=ep.group)
        send_rows, recv_rows = per_rank.sum(dim=1).tolist(), received.sum(dim=1).tolist()
        arrived = all_to_all_rows(sorted_in, ep, recv_rows, send_rows)  # by source, then expert
        # expert-major for the experts (expert j: source 0's slots, then source 1's, ...)
        segment = torch.arange(ep.size * n, device=counts.device)
        segment = segment.repeat_interleave(received.flatten())  # s * n + j for each row
        by_expert = torch.argsort((segment % n) * ep.size + segment // n, stable=True)
        out = self.experts(arrived[by_expert], received.sum(dim=0).tolist())
        back = torch.empty_like(out).index_copy(0, by_expert, out)  # source-major again
        return all_to_all_rows(back, ep, send_rows, recv_rows)

    def shared(self, flat: torch.Tensor) -> torch.Tensor | float:
        """sigmoid(x g) * shared_expert(x) (Qwen2-MoE), or 0 without a shared expert."""
        if self.shared_expert is None or self.shared_expert_gate is None:
            return 0.0
        gate = torch.sigmoid(self.shared_expert_gate(flat))  # (tokens, 1)
        return gate * self.shared_expert.expert(0, flat)


def layer_stats(out: MoEOutput) -> torch.Tensor:
    """One MoE layer's contribution to the model's auxiliary losses, packed as one tensor
    (2 * experts + 1,): [slots per expert (no gradient) | router probabilities summed over the
    tokens | z-loss]. Summed over layers, `MoELosses.of` reads it."""
    probs = out.router_probs.sum(dim=0).float()
    return torch.cat([out.expert_counts.float(), probs, out.z_loss.float().view(1)])


class MoELosses(NamedTuple):
    """The auxiliary losses of one forward pass over every MoE layer, unweighted."""

    load_balancing: torch.Tensor  # () num_experts * sum_e f_e P_e over all layers' tokens
    z: torch.Tensor  # () the router z-loss, averaged over the layers
    expert_share: torch.Tensor  # (experts,) share of the token-slots, over all layers

    @staticmethod
    def of(stats: torch.Tensor, layers: int, tokens: int, experts: int) -> MoELosses:
        """From `layer_stats` summed over `layers` MoE layers of `tokens` tokens each: the
        load-balancing loss as transformers' `load_balancing_loss_func` computes it over the
        layers' router logits together (f_e: slots routed to e per token, so sum_e f_e = top_k;
        P_e: the mean router probability of e)."""
        counts, probs, z = stats[:experts], stats[experts : 2 * experts], stats[-1]
        f = counts / (layers * tokens)
        mean_probs = probs / (layers * tokens)
        return MoELosses(
            load_balancing=experts * torch.sum(f * mean_probs),
            z=z / layers,
            expert_share=(counts / counts.sum()).detach(),
        )

    def detached(self) -> MoELosses:
        """The same numbers without their gradient (kept for metrics)."""
        return MoELosses(self.load_balancing.detach(), self.z.detach(), self.expert_share)


def moe_aux_loss(config: ModelConfig, aux: MoELosses, dtype: torch.dtype) -> torch.Tensor:
    """The weighted auxiliary losses the training loss adds: moe_loss_coeff x the load-balancing
    loss (not for the sinkhorn router, which balances by itself) and moe_z_loss_coeff x the
    z-loss."""
    total = torch.zeros((), dtype=dtype, device=aux.z.device)
    if config.moe_router_type != "sinkhorn" and config.moe_loss_coeff:
        total = total + config.moe_loss_coeff * aux.load_balancing.to(dtype)
    if config.moe_z_loss_coeff:
        total = total + config.moe_z_loss_coeff * aux.z.to(dtype)
    return total
