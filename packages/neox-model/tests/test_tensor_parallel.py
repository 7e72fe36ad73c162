"""Tensor-parallel layers: two real gloo ranks on CPU against plain single-process torch.

Every distributed check runs in one `torch.multiprocessing.spawn` per test module: each rank runs
all checks, compares its results with a reference computed from the FULL tensors with plain torch
ops, and writes {check: ok, detail} to a JSON file that the parametrized tests below read back.
Sharded results are gathered and reassembled here with code independent of the module under test.
"""

import functools
import itertools
import json
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TPGroup,
    VocabParallelEmbedding,
    column_parallel_linear,
    copy_to_tp,
    gather_from_tp,
    gather_sequence,
    next_token_loss,
    reduce_from_tp,
    reduce_scatter_sequence,
    scatter_to_tp,
    sequence_part,
    shard,
    sum_replicated_gradients,
    vocab_parallel_cross_entropy,
)
from neox_testing import spawn_ranks

WORLD = 2
TOL = 1e-5  # max |got - want| / max |want|, fp32

Pair = tuple[str, torch.Tensor, torch.Tensor] | tuple[str, torch.Tensor, torch.Tensor, float]


# ---------------------------------------------------------------------------------------------
# Helpers, written independently of neox_model.tensor_parallel.


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.shape != want.shape:
        raise AssertionError(f"shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


def local_part(full: torch.Tensor, dim: int, rank: int, chunks: int = 1) -> torch.Tensor:
    """Rank's slice of every one of `chunks` equal blocks of `dim`, by reshaping."""
    dim %= full.dim()
    width = full.shape[dim] // (chunks * WORLD)
    blocks = full.unflatten(dim, (chunks, WORLD, width))
    return blocks.select(dim + 1, rank).flatten(dim, dim + 1)


def gather_full(local: torch.Tensor, dim: int, group: object, chunks: int = 1) -> torch.Tensor:
    """Inverse of `local_part` over the real group: all-gather, then put blocks in full order."""
    local = local.detach().contiguous()
    parts = [torch.empty_like(local) for _ in range(WORLD)]
    dist.all_gather(parts, local, group=group)
    dim %= local.dim()
    width = local.shape[dim] // chunks
    stacked = torch.stack([p.unflatten(dim, (chunks, width)) for p in parts], dim=dim + 1)
    return stacked.flatten(dim, dim + 2)  # (..., chunks * WORLD * width, ...)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


def grad_of(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None and t.grad is not None, "no gradient reached this tensor"
    return t.grad


# ---------------------------------------------------------------------------------------------
# Distributed checks: each returns (label, got, want[, tol]) with got gathered to full size.


def check_tpgroup_of(tp: TPGroup) -> list[Pair]:
    assert (tp.rank, tp.size) == (dist.get_rank(), WORLD), f"TPGroup.of gave {tp}"
    return []


def check_copy(tp: TPGroup) -> list[Pair]:
    x = leaf(randn(2, 4, seed=1))
    y = copy_to_tp(x, tp)
    y.backward(randn(2, 4, seed=10 + tp.rank))  # a different upstream gradient per rank
    return [("output", y, x), ("grad x", grad_of(x), randn(2, 4, seed=10) + randn(2, 4, seed=11))]


def check_reduce(tp: TPGroup) -> list[Pair]:
    x = leaf(randn(2, 4, seed=20 + tp.rank))
    y = reduce_from_tp(x, tp)
    y.backward(randn(2, 4, seed=2))
    want = randn(2, 4, seed=20) + randn(2, 4, seed=21)
    untouched = ("input untouched", x, randn(2, 4, seed=20 + tp.rank))
    return [("output", y, want), ("grad x", grad_of(x), randn(2, 4, seed=2)), untouched]


def check_gather(tp: TPGroup) -> list[Pair]:
    full, g = randn(2, 3, 6, seed=3), randn(2, 3, 6, seed=4)
    x = leaf(local_part(full, -1, tp.rank))
    y = gather_from_tp(x, tp)
    y.backward(g)
    return [("output", y, full), ("grad x", grad_of(x), local_part(g, -1, tp.rank))]


def check_scatter(tp: TPGroup) -> list[Pair]:
    full, g = randn(2, 3, 6, seed=5), randn(2, 3, 6, seed=6)
    x = leaf(full)
    y = scatter_to_tp(x, tp)
    y.backward(local_part(g, -1, tp.rank))
    return [("output", y, local_part(full, -1, tp.rank)), ("grad x", grad_of(x), g)]


def check_column(tp: TPGroup, gather_output: bool, chunks: int, bias: bool) -> list[Pair]:
    x, w, b = randn(2, 3, 6, seed=1), randn(8, 6, seed=2), randn(8, seed=3)
    g = randn(2, 3, 8, seed=4)
    x_ref, w_ref, b_ref = leaf(x), leaf(w), leaf(b)
    y_ref = x_ref @ w_ref.T + (b_ref if bias else 0.0)
    y_ref.backward(g)

    layer = ColumnParallelLinear(6, 8, tp, bias=bias, chunks=chunks, gather_output=gather_output)
    with torch.no_grad():
        layer.weight.copy_(layer.shard_weight(w))
        if layer.bias is not None:
            layer.bias.copy_(layer.shard_bias(b))
    x_tp = leaf(x)
    y = layer(x_tp)
    y.backward(g if gather_output else local_part(g, -1, tp.rank, chunks))
    y_full = y if gather_output else gather_full(y, -1, tp.group, chunks)
    pairs: list[Pair] = [("output", y_full, y_ref), ("grad x", grad_of(x_tp), grad_of(x_ref))]
    pairs.append(
        ("grad weight", gather_full(grad_of(layer.weight), 0, tp.group, chunks), w_ref.grad)
    )
    if bias:
        pairs.append(
            ("grad bias", gather_full(grad_of(layer.bias), 0, tp.group, chunks), b_ref.grad)
        )
    else:
        assert layer.bias is None, "bias=False still made a bias"
    return pairs


def check_row(tp: TPGroup, input_is_parallel: bool, bias: bool) -> list[Pair]:
    x, w, b = randn(2, 3, 8, seed=1), randn(6, 8, seed=2), randn(6, seed=3)
    g = randn(2, 3, 6, seed=4)
    x_ref, w_ref, b_ref = leaf(x), leaf(w), leaf(b)
    y_ref = x_ref @ w_ref.T + (b_ref if bias else 0.0)
    y_ref.backward(g)

    layer = RowParallelLinear(8, 6, tp, bias=bias, input_is_parallel=input_is_parallel)
    with torch.no_grad():
        layer.weight.copy_(layer.shard_weight(w))
        if layer.bias is not None:
            layer.bias.copy_(b)
    x_tp = leaf(local_part(x, -1, tp.rank) if input_is_parallel else x)
    y = layer(x_tp)
    y.backward(g)
    grad_x = grad_of(x_tp)
    grad_x = gather_full(grad_x, -1, tp.group) if input_is_parallel else grad_x
    pairs: list[Pair] = [("output", y, y_ref), ("grad x", grad_x, grad_of(x_ref))]
    pairs.append(("grad weight", gather_full(grad_of(layer.weight), 1, tp.group), w_ref.grad))
    if bias:
        pairs.append(("grad bias", grad_of(layer.bias), grad_of(b_ref)))
    return pairs


def check_embedding(tp: TPGroup) -> list[Pair]:
    ids = torch.tensor([[0, 3, 4, 7, 3], [5, 5, 1, 6, 2]])  # both halves, repeated ids
    w, g = randn(8, 5, seed=1), randn(2, 5, 5, seed=2)
    w_ref = leaf(w)
    y_ref = w_ref[ids]
    y_ref.backward(g)

    layer = VocabParallelEmbedding(8, 5, tp)
    assert (layer.vocab_start, layer.vocab_end) == (4 * tp.rank, 4 * tp.rank + 4)
    with torch.no_grad():
        layer.weight.copy_(layer.shard_weight(w))
    y = layer(ids)
    y.backward(g)
    grad_w = gather_full(grad_of(layer.weight), 0, tp.group)
    return [("output", y, y_ref), ("grad weight", grad_w, grad_of(w_ref))]


def check_cross_entropy(tp: TPGroup, dtype: torch.dtype, ignore: bool = False) -> list[Pair]:
    full = randn(2, 3, 12, seed=1, scale=4.0).to(dtype)
    target = torch.tensor([[0, 11, 5], [6, 2, 9]])  # owned by both ranks
    if ignore:  # F.cross_entropy's ignore_index: loss 0, no gradient
        target = torch.tensor([[0, -100, 5], [-100, 2, -100]])
    g = randn(2, 3, seed=2)
    ref = leaf(full.float())
    loss_ref = F.cross_entropy(ref.view(-1, 12), target.view(-1), reduction="none").view(2, 3)
    loss_ref.backward(g)
    if ignore:
        assert (loss_ref[target == -100] == 0).all()

    logits = leaf(local_part(full, -1, tp.rank))
    loss = vocab_parallel_cross_entropy(logits, target, tp)
    loss.backward(g)
    assert loss.dtype == torch.float32, f"loss dtype {loss.dtype}"
    assert grad_of(logits).dtype == dtype, f"grad dtype {grad_of(logits).dtype}"
    grad = gather_full(grad_of(logits), -1, tp.group).float()
    grad_tol = TOL if dtype == torch.float32 else 1e-2  # bf16 gradient: one rounding each side
    return [
        ("loss", loss, loss_ref),
        ("grad logits", grad, grad_of(ref).to(dtype).float(), grad_tol),
    ]


def check_next_token_loss(tp: TPGroup) -> list[Pair]:
    """The masked mean over a shard equals F.cross_entropy's mean with ignore_index."""
    full = randn(3, 5, 12, seed=3, scale=3.0)
    target = torch.randint(0, 12, (3, 5), generator=torch.Generator().manual_seed(4))
    target[0, ::2] = -100
    target[2, 1:] = -100
    ref = leaf(full)
    loss_ref = F.cross_entropy(ref.view(-1, 12), target.view(-1), ignore_index=-100)
    loss_ref.backward()
    logits = leaf(local_part(full, -1, tp.rank))
    loss = next_token_loss(logits, target, tp)
    loss.backward()
    grad = gather_full(grad_of(logits), -1, tp.group)
    return [("loss", loss, loss_ref), ("grad logits", grad, grad_of(ref))]


def check_mlp(tp: TPGroup) -> list[Pair]:
    x, g = randn(2, 3, 6, seed=1), randn(2, 3, 6, seed=2)
    w1, b1, w2, b2 = randn(8, 6, seed=3), randn(8, seed=4), randn(6, 8, seed=5), randn(6, seed=6)
    ref = [leaf(t) for t in (x, w1, b1, w2, b2)]
    y_ref = F.gelu(ref[0] @ ref[1].T + ref[2]) @ ref[3].T + ref[4]
    y_ref.backward(g)

    up, down = ColumnParallelLinear(6, 8, tp), RowParallelLinear(8, 6, tp)
    with torch.no_grad():
        up.weight.copy_(up.shard_weight(w1))
        up.bias.copy_(up.shard_bias(b1))
        down.weight.copy_(down.shard_weight(w2))
        down.bias.copy_(b2)
    x_tp = leaf(x)
    y = down(F.gelu(up(x_tp)))
    y.backward(g)
    grads = [
        grad_of(x_tp),
        gather_full(grad_of(up.weight), 0, tp.group),
        gather_full(grad_of(up.bias), 0, tp.group),
        gather_full(grad_of(down.weight), 1, tp.group),
        grad_of(down.bias),
    ]
    labels = ["grad x", "grad w1", "grad b1", "grad w2", "grad b2"]
    pairs: list[Pair] = [("output", y, y_ref)]
    return pairs + [(n, got, grad_of(r)) for n, got, r in zip(labels, grads, ref, strict=True)]


def check_gated_mlp(tp: TPGroup) -> list[Pair]:
    """[up | gate] from one chunks=2 column layer, up * silu(gate), then a row layer."""
    x, g = randn(2, 3, 6, seed=1), randn(2, 3, 6, seed=2)
    w1, w2 = randn(16, 6, seed=3), randn(6, 8, seed=4)
    x_ref, w1_ref, w2_ref = leaf(x), leaf(w1), leaf(w2)
    up_ref, gate_ref = (x_ref @ w1_ref.T).chunk(2, dim=-1)
    y_ref = (up_ref * F.silu(gate_ref)) @ w2_ref.T
    y_ref.backward(g)

    up = ColumnParallelLinear(6, 16, tp, bias=False, chunks=2)
    down = RowParallelLinear(8, 6, tp, bias=False)
    with torch.no_grad():
        up.weight.copy_(up.shard_weight(w1))
        down.weight.copy_(down.shard_weight(w2))
    x_tp = leaf(x)
    u, gate = up(x_tp).chunk(2, dim=-1)
    y = down(u * F.silu(gate))
    y.backward(g)
    return [
        ("output", y, y_ref),
        ("grad x", grad_of(x_tp), grad_of(x_ref)),
        ("grad w1", gather_full(grad_of(up.weight), 0, tp.group, chunks=2), grad_of(w1_ref)),
        ("grad w2", gather_full(grad_of(down.weight), 1, tp.group), grad_of(w2_ref)),
    ]


# Sequence parallelism: activations (batch, seq, features) split along dim -2 (the sequence).
# batch 2 > 1, so the exchange is not a plain split of a contiguous buffer.


def check_gather_sequence(tp: TPGroup) -> list[Pair]:
    full = randn(2, 6, 4, seed=30)
    x = leaf(local_part(full, -2, tp.rank))  # (2, 3, 4): this rank's positions
    y = gather_sequence(x, tp)
    y.backward(randn(2, 6, 4, seed=31 + tp.rank))  # each rank's own gradient of the whole
    summed = randn(2, 6, 4, seed=31) + randn(2, 6, 4, seed=32)
    return [("output", y, full), ("grad x", grad_of(x), local_part(summed, -2, tp.rank))]


def check_reduce_scatter_sequence(tp: TPGroup) -> list[Pair]:
    x = leaf(randn(2, 6, 4, seed=33 + tp.rank))  # each rank's partial sum of the whole
    summed = randn(2, 6, 4, seed=33) + randn(2, 6, 4, seed=34)
    g = randn(2, 6, 4, seed=35)
    y = reduce_scatter_sequence(x, tp)
    y.backward(local_part(g, -2, tp.rank))
    return [("output", y, local_part(summed, -2, tp.rank)), ("grad x", grad_of(x), g)]


def check_column_linear_sequence(tp: TPGroup, bias: bool) -> list[Pair]:
    """The gathering matmul against F.linear on the whole sequence."""
    x, w, b, g = (
        randn(2, 6, 5, seed=36),
        randn(8, 5, seed=37),
        randn(8, seed=38),
        randn(2, 6, 8, seed=39),
    )
    x_ref, w_ref, b_ref = leaf(x), leaf(w), leaf(b)
    F.linear(x_ref, w_ref, b_ref if bias else None).backward(g)
    x_tp, w_tp, b_tp = leaf(local_part(x, -2, tp.rank)), leaf(local_part(w, 0, tp.rank)), None
    if bias:
        b_tp = leaf(local_part(b, 0, tp.rank))
    y = column_parallel_linear(x_tp, w_tp, b_tp, tp, sequence_parallel=True)
    y.backward(local_part(g, -1, tp.rank))
    pairs: list[Pair] = [
        ("output", gather_full(y, -1, tp.group), F.linear(x, w, b if bias else None)),
        ("grad x", gather_full(grad_of(x_tp), -2, tp.group), grad_of(x_ref)),
        ("grad weight", gather_full(grad_of(w_tp), 0, tp.group), grad_of(w_ref)),
    ]
    if bias:
        pairs.append(("grad bias", gather_full(grad_of(b_tp), 0, tp.group), grad_of(b_ref)))
    return pairs


def check_mlp_sequence_parallel(tp: TPGroup, chunks: int) -> list[Pair]:
    """norm -> column (gathers) -> act -> row (reduce-scatters) on this rank's positions, with
    the replicated norm and row-bias gradients summed by `sum_replicated_gradients`."""
    x, g = randn(2, 6, 6, seed=40), randn(2, 6, 6, seed=41)
    w1, b1 = randn(8 * chunks, 6, seed=42), randn(8 * chunks, seed=43)
    w2, b2 = randn(6, 8, seed=44), randn(6, seed=45)
    ln_ref = nn.LayerNorm(6)
    ref = [leaf(t) for t in (x, w1, b1, w2, b2)]
    h_ref = F.linear(ln_ref(ref[0]), ref[1], ref[2])
    h_ref = h_ref.chunk(2, -1)[0] * F.silu(h_ref.chunk(2, -1)[1]) if chunks == 2 else F.gelu(h_ref)
    y_ref = F.linear(h_ref, ref[3], ref[4])
    y_ref.backward(g)

    ln = nn.LayerNorm(6)
    up = ColumnParallelLinear(6, 8 * chunks, tp, chunks=chunks, sequence_parallel=True)
    down = RowParallelLinear(8, 6, tp, sequence_parallel=True)
    with torch.no_grad():
        up.weight.copy_(up.shard_weight(w1))
        up.bias.copy_(up.shard_bias(b1))
        down.weight.copy_(down.shard_weight(w2))
        down.bias.copy_(b2)
    block = nn.ModuleList([ln, up, down])
    sum_replicated_gradients(block, tp)
    x_tp = leaf(local_part(x, -2, tp.rank))
    h = up(ln(x_tp))  # (2, 6, 8 * chunks / size): the whole sequence
    h = h.chunk(2, -1)[0] * F.silu(h.chunk(2, -1)[1]) if chunks == 2 else F.gelu(h)
    y = down(h)  # (2, 3, 6): this rank's positions
    y.backward(local_part(g, -2, tp.rank))
    return [
        ("output", y, local_part(y_ref.detach(), -2, tp.rank)),
        ("grad x", gather_full(grad_of(x_tp), -2, tp.group), grad_of(ref[0])),
        ("grad w1", gather_full(grad_of(up.weight), 0, tp.group, chunks), grad_of(ref[1])),
        ("grad b1", gather_full(grad_of(up.bias), 0, tp.group, chunks), grad_of(ref[2])),
        ("grad w2", gather_full(grad_of(down.weight), 1, tp.group), grad_of(ref[3])),
        ("grad b2 (summed)", grad_of(down.bias), grad_of(ref[4])),
        ("grad norm weight (summed)", grad_of(ln.weight), grad_of(ln_ref.weight)),
        ("grad norm bias (summed)", grad_of(ln.bias), grad_of(ln_ref.bias)),
    ]


def check_embedding_sequence_parallel(tp: TPGroup) -> list[Pair]:
    ids = torch.tensor([[0, 3, 4, 7, 3, 1], [5, 5, 1, 6, 2, 0]])  # both halves, repeated ids
    w, g = randn(8, 5, seed=46), randn(2, 6, 5, seed=47)
    w_ref = leaf(w)
    w_ref[ids].backward(g)
    layer = VocabParallelEmbedding(8, 5, tp, sequence_parallel=True)
    with torch.no_grad():
        layer.weight.copy_(layer.shard_weight(w))
    y = layer(ids)  # (2, 3, 5): this rank's positions
    y.backward(local_part(g, -2, tp.rank))
    grad_w = gather_full(grad_of(layer.weight), 0, tp.group)
    return [("output", y, local_part(w[ids], -2, tp.rank)), ("grad weight", grad_w, w_ref.grad)]


def check_sequence_part(tp: TPGroup) -> list[Pair]:
    positions = torch.arange(6.0)
    return [("positions", sequence_part(positions, tp, dim=-1), local_part(positions, -1, tp.rank))]


def _dist_checks() -> dict[str, Callable[[TPGroup], list[Pair]]]:
    checks: dict[str, Callable[[TPGroup], list[Pair]]] = {
        "tpgroup_of": check_tpgroup_of,
        "copy_to_tp": check_copy,
        "reduce_from_tp": check_reduce,
        "gather_from_tp": check_gather,
        "scatter_to_tp": check_scatter,
    }
    for gather, chunks, bias in itertools.product((False, True), (1, 2), (True, False)):
        name = f"column-gather_{gather}-chunks_{chunks}-bias_{bias}"
        checks[name] = functools.partial(
            check_column, gather_output=gather, chunks=chunks, bias=bias
        )
    for parallel, bias in itertools.product((True, False), (True, False)):
        name = f"row-input_is_parallel_{parallel}-bias_{bias}"
        checks[name] = functools.partial(check_row, input_is_parallel=parallel, bias=bias)
    checks["vocab_embedding"] = check_embedding
    checks["cross_entropy-fp32"] = functools.partial(check_cross_entropy, dtype=torch.float32)
    checks["cross_entropy-bf16"] = functools.partial(check_cross_entropy, dtype=torch.bfloat16)
    checks["cross_entropy-ignored"] = functools.partial(
        check_cross_entropy, dtype=torch.float32, ignore=True
    )
    checks["next_token_loss-ignored"] = check_next_token_loss
    checks["mlp-column_gelu_row"] = check_mlp
    checks["mlp-gated_chunks_2"] = check_gated_mlp
    checks["gather_sequence"] = check_gather_sequence
    checks["reduce_scatter_sequence"] = check_reduce_scatter_sequence
    checks["sequence_part"] = check_sequence_part
    for bias in (True, False):
        checks[f"column_linear_sequence-bias_{bias}"] = functools.partial(
            check_column_linear_sequence, bias=bias
        )
    checks["vocab_embedding-sequence_parallel"] = check_embedding_sequence_parallel
    for chunks in (1, 2):
        checks[f"mlp-sequence_parallel-chunks_{chunks}"] = functools.partial(
            check_mlp_sequence_parallel, chunks=chunks
        )
    return checks


DIST_CHECKS = _dist_checks()


# ---------------------------------------------------------------------------------------------
# The spawned workers and the parent side.


def run_check(check: Callable[[TPGroup], list[Pair]], tp: TPGroup) -> dict[str, object]:
    try:
        diffs = {}
        for label, got, want, *tol in check(tp):
            diffs[label] = (rel_diff(got, want), tol[0] if tol else TOL)
    except Exception:
        return {"ok": False, "detail": traceback.format_exc()}
    bad = [f"{k}: {d:.3g} > {t:g}" for k, (d, t) in diffs.items() if not d <= t]
    detail = "; ".join(bad) or ", ".join(f"{k}: {d:.2g}" for k, (d, _) in diffs.items())
    return {"ok": not bad, "detail": f"max relative diff {detail}"}


def worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        tp = TPGroup.of(dist.new_group(list(range(WORLD))))
        results = {name: run_check(check, tp) for name, check in DIST_CHECKS.items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict]]:
    out_dir = tmp_path_factory.mktemp("tensor_parallel")
    spawn_ranks(worker, WORLD, str(out_dir))
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.parametrize("check", list(DIST_CHECKS))
def test_two_ranks_match_single_process(two_rank_results: list[dict[str, dict]], check: str):
    failures = [
        f"rank {rank}, check {check}: {results[check]['detail']}"
        for rank, results in enumerate(two_rank_results)
        if not results[check]["ok"]
    ]
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# Single process: size 1 is plain torch; sharding and sizes.

SINGLE = TPGroup.single()


@pytest.mark.parametrize(("chunks", "gather_output"), [(1, False), (2, True)])
def test_single_column_is_nn_linear(chunks: int, gather_output: bool):
    plain = nn.Linear(6, 8)
    layer = ColumnParallelLinear(6, 8, SINGLE, chunks=chunks, gather_output=gather_output)
    layer.load_state_dict(plain.state_dict())
    x1, x2 = leaf(randn(3, 6, seed=1)), leaf(randn(3, 6, seed=1))
    torch.testing.assert_close(layer(x1), plain(x2), rtol=0, atol=0)
    layer(x1).square().sum().backward()
    plain(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad, rtol=0, atol=0)


@pytest.mark.parametrize("input_is_parallel", [True, False])
def test_single_row_is_nn_linear(input_is_parallel: bool):
    plain = nn.Linear(8, 6)
    layer = RowParallelLinear(8, 6, SINGLE, input_is_parallel=input_is_parallel)
    layer.load_state_dict(plain.state_dict())
    x1, x2 = leaf(randn(3, 8, seed=1)), leaf(randn(3, 8, seed=1))
    torch.testing.assert_close(layer(x1), plain(x2))
    layer(x1).square().sum().backward()
    plain(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(layer.bias.grad, plain.bias.grad)


def test_single_embedding_is_nn_embedding():
    plain = nn.Embedding(8, 5)
    layer = VocabParallelEmbedding(8, 5, SINGLE)
    layer.load_state_dict(plain.state_dict())
    ids = torch.tensor([[0, 7, 7, 3]])
    torch.testing.assert_close(layer(ids), plain(ids), rtol=0, atol=0)
    layer(ids).sum().backward()
    plain(ids).sum().backward()
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad, rtol=0, atol=0)


def test_single_cross_entropy_is_f_cross_entropy():
    logits, target = randn(4, 5, 11, seed=1, scale=8.0), torch.randint(0, 11, (4, 5))
    x1, x2 = leaf(logits), leaf(logits)
    loss = vocab_parallel_cross_entropy(x1, target, SINGLE)
    want = F.cross_entropy(x2.view(-1, 11), target.view(-1), reduction="none").view(4, 5)
    torch.testing.assert_close(loss, want)
    loss.backward(randn(4, 5, seed=2))
    want.backward(randn(4, 5, seed=2))
    torch.testing.assert_close(x1.grad, x2.grad)


def test_next_token_loss_without_ignored_labels_is_exactly_the_mean():
    logits, target = randn(4, 7, 11, seed=5, scale=4.0), torch.randint(0, 11, (4, 7))
    x1, x2 = leaf(logits), leaf(logits)
    loss = next_token_loss(x1, target, SINGLE)
    mean = vocab_parallel_cross_entropy(x2, target, SINGLE).mean()
    assert torch.equal(loss, mean)  # bit for bit: unmasked training is unchanged
    loss.backward()
    mean.backward()
    assert torch.equal(x1.grad, x2.grad)


def test_next_token_loss_of_only_ignored_labels_is_zero_without_gradient():
    x = leaf(randn(2, 3, 11, seed=6))
    loss = next_token_loss(x, torch.full((2, 3), -100), SINGLE)
    loss.backward()
    assert loss.item() == 0.0 and not x.grad.any()


def test_cross_entropy_computes_in_fp32_for_bf16_logits():
    logits = randn(3, 50, seed=1, scale=30.0).bfloat16()
    target = torch.randint(0, 50, (3,))
    loss = vocab_parallel_cross_entropy(leaf(logits), target, SINGLE)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), target, reduction="none"))


def test_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 7\).*\(2, 4\)"):
        vocab_parallel_cross_entropy(
            torch.zeros(2, 3, 7), torch.zeros(2, 4, dtype=torch.long), SINGLE
        )


def test_size_one_collectives_return_input_unchanged():
    x = torch.randn(2, 3)
    collectives = (
        copy_to_tp,
        reduce_from_tp,
        gather_from_tp,
        scatter_to_tp,
        gather_sequence,
        reduce_scatter_sequence,
    )
    for collective in collectives:
        assert collective(x, SINGLE) is x


def test_sequence_parallel_at_size_one_is_plain_layers_without_hooks():
    column = ColumnParallelLinear(6, 8, SINGLE, sequence_parallel=True)
    row = RowParallelLinear(8, 6, SINGLE, sequence_parallel=True)
    embedding = VocabParallelEmbedding(8, 6, SINGLE, sequence_parallel=True)
    assert not (column.sequence_parallel or row.sequence_parallel or embedding.sequence_parallel)
    norm = nn.LayerNorm(6)
    sum_replicated_gradients(norm, SINGLE)
    x = leaf(randn(2, 3, 6, seed=1))
    norm(x).square().sum().backward()
    want = nn.LayerNorm(6)
    want(x.detach()).square().sum().backward()
    assert torch.equal(norm.weight.grad, want.weight.grad)


def test_sequence_part_and_row_layer_reject_what_cannot_split():
    with pytest.raises(ValueError, match=r"sequence length \(5\).*tensor-parallel size \(2\)"):
        sequence_part(torch.zeros(2, 5, 3), TPGroup(None, 0, 2))
    with pytest.raises(ValueError, match="input_is_parallel"):
        RowParallelLinear(
            8, 6, TPGroup(None, 0, 2), input_is_parallel=False, sequence_parallel=True
        )


def test_shard_with_chunks_takes_matching_slices_of_each_block():
    full = torch.arange(8)  # [up 0..3 | gate 4..7]
    assert shard(full, TPGroup(None, 0, 2), dim=0, chunks=2).tolist() == [0, 1, 4, 5]
    assert shard(full, TPGroup(None, 1, 2), dim=0, chunks=2).tolist() == [2, 3, 6, 7]
    assert shard(full, TPGroup(None, 1, 2), dim=0).tolist() == [4, 5, 6, 7]


def test_shard_returns_contiguous_copy_along_any_dim():
    full = torch.arange(24.0).view(2, 12)
    part = shard(full, TPGroup(None, 2, 3), dim=-1)
    assert part.tolist() == [[8.0, 9.0, 10.0, 11.0], [20.0, 21.0, 22.0, 23.0]]
    assert part.is_contiguous()
    part.zero_()
    assert full[0, 8] == 8.0


def test_divide_error_names_what_n_and_size():
    assert TPGroup(None, 0, 4).divide(12, "heads") == 3
    with pytest.raises(ValueError, match=r"num_attention_heads \(10\).*tensor-parallel size \(4\)"):
        TPGroup(None, 0, 4).divide(10, "num_attention_heads")


def test_layers_hold_their_shard_and_reject_indivisible_sizes():
    tp = TPGroup(None, 1, 2)
    assert ColumnParallelLinear(6, 8, tp).weight.shape == (4, 6)
    assert ColumnParallelLinear(6, 8, tp).bias.shape == (4,)
    assert RowParallelLinear(8, 6, tp).weight.shape == (6, 4)
    assert RowParallelLinear(8, 6, tp).bias.shape == (6,)
    emb = VocabParallelEmbedding(10, 3, tp)
    assert (emb.weight.shape, emb.vocab_start, emb.vocab_end) == ((5, 3), 5, 10)
    with pytest.raises(ValueError, match="ColumnParallelLinear out_features"):
        ColumnParallelLinear(6, 6, tp, chunks=2)  # 3 per chunk does not split over 2 ranks
    with pytest.raises(ValueError, match="RowParallelLinear in_features"):
        RowParallelLinear(7, 6, tp)
    with pytest.raises(ValueError, match="VocabParallelEmbedding num_embeddings"):
        VocabParallelEmbedding(9, 3, tp)


def test_tpgroup_validates_rank_and_needs_initialised_distributed():
    assert TPGroup.single() == TPGroup(None, 0, 1)
    with pytest.raises(ValueError, match="rank=2, size=2"):
        TPGroup(None, 2, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        TPGroup.of(None)  # this (parent) test process never initialises torch.distributed
