"""Training a mixture-of-experts model: worker processes over gloo against one process, the
auxiliary losses in the training loss and in the metrics, exact resume."""

import json
import shutil

import pytest

from neox_model import load_state_dict
from neox_train import ConfigError, load_run_config
from neox_train.monitoring.metrics import read_metrics

from conftest import (
    as_if_killed_after,
    losses,
    run_workers,
    step_only,
    tiny_config,
    write_config,
)

TOLERANCE = 1e-5
# layer 0 a mixture of 4 experts (2 per token, Mixtral's router), layer 1 dense
MOE = dict(
    moe_num_experts=4,
    moe_top_k=2,
    moe_router_type="softmax_topk",
    moe_expert_interval=2,
    moe_loss_coeff=0.05,
    moe_z_loss_coeff=0.01,
)


def config(data_dir, save, **extra):
    values = dict(
        MOE,
        train_batch_size=8,
        train_micro_batch_size_per_gpu=4,
        train_iters=8,
        checkpoint_factor=4,
    )
    return tiny_config(data_dir, save, **{**values, **extra})


def metric(run_dir, key):
    return {r["step"]: r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r}


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """One process accumulating 2 micro batches, and 2 data-parallel ranks with ZeRO-1: the
    same micro batches of 4 samples."""
    root = tmp_path_factory.mktemp("moe")
    one = config(
        data_dir, root / "one", gradient_accumulation_steps=2, zero_optimization={"stage": 0}
    )
    two = config(data_dir, root / "two", zero_optimization={"stage": 1})
    tp2 = config(
        data_dir,
        root / "tp2",
        model_parallel_size=2,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": 0},
    )
    out = run_workers([write_config(root / "one.yml", one)], 1)
    run_workers([write_config(root / "two.yml", two)], 2)
    run_workers([write_config(root / "tp2.yml", tp2)], 2)
    return root / "one", root / "two", out


def test_data_parallel_zero1_trains_the_moe_model_as_one_process(runs):
    one, two, _ = runs
    single, double = losses(one), losses(two)
    assert sorted(single) == sorted(double) == list(range(1, 9))
    for step, loss in single.items():
        assert abs(double[step] - loss) <= TOLERANCE * loss, (step, double[step], loss)
    for key in ("moe_load_balancing_loss", "moe_z_loss", "moe_max_expert_share"):
        a, b = metric(one, key), metric(two, key)
        for step, value in a.items():
            assert b[step] == pytest.approx(value, rel=TOLERANCE), (key, step)
    assert single[8] < single[1]


def test_the_experts_split_over_two_tensor_parallel_ranks_train_as_one_process(runs):
    """GPT-NeoX's layout: each tensor-parallel rank holds 2 of the 4 experts."""
    one, _, _ = runs
    tp2 = one.parent / "tp2"
    single, split = losses(one), losses(tp2)
    assert sorted(split) == list(range(1, 9))
    for step, loss in single.items():
        assert abs(split[step] - loss) <= TOLERANCE * loss, (step, split[step], loss)
    a, b = metric(one, "moe_load_balancing_loss"), metric(tp2, "moe_load_balancing_loss")
    assert all(b[step] == pytest.approx(value, rel=TOLERANCE) for step, value in a.items())


@pytest.mark.parametrize(("source", "target"), [("tp2", "one"), ("one", "tp2")])
def test_an_moe_run_resumes_at_another_tensor_parallel_size(
    data_dir, tmp_path, runs, source, target
):
    """The experts joined from the saved ranks and split again, the optimizer state with them."""
    root = runs[0].parent
    load = step_only(root / source, tmp_path / "load", step=4)
    layout = dict(model_parallel_size=2) if target == "tp2" else {}
    values = config(
        data_dir,
        tmp_path / "save",
        gradient_accumulation_steps=2,
        zero_optimization={"stage": 0},
        load=str(load),
        **layout,
    )
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 2 if layout else 1)
    assert "was saved at" in out and "at step 4" in out, out[-2000:]
    full, again = losses(root / source), losses(tmp_path / "save")
    assert sorted(again) == [5, 6, 7, 8]
    for step in again:
        assert abs(again[step] - full[step]) <= TOLERANCE * full[step], step


@pytest.fixture(scope="module")
def experts_split(data_dir, tmp_path_factory, runs):
    """Expert parallelism: 2 ranks each holding 2 of the 4 experts (the same micro batches as
    `runs`' one process); 4 ranks in 2 expert-parallel pairs with ZeRO-1 partitioning over the
    ranks holding the same experts, against one process accumulating the same 4 micro batches
    of 2 samples."""
    root = tmp_path_factory.mktemp("moe_ep")
    ep2 = config(data_dir, root / "ep2", moe_expert_parallel_size=2, zero_optimization={"stage": 0})
    small = dict(train_micro_batch_size_per_gpu=2)
    one4 = config(
        data_dir,
        root / "one4",
        gradient_accumulation_steps=4,
        zero_optimization={"stage": 0},
        **small,
    )
    ep2_zero1 = config(
        data_dir,
        root / "ep2_zero1",
        moe_expert_parallel_size=2,
        zero_optimization={"stage": 1},
        **small,
    )
    out = run_workers([write_config(root / "ep2.yml", ep2)], 2)
    run_workers([write_config(root / "one4.yml", one4)], 1)
    out4 = run_workers([write_config(root / "ep2_zero1.yml", ep2_zero1)], 4)
    return root, out, out4


def assert_same_run(reference, other, keys=("moe_load_balancing_loss", "moe_z_loss")):
    single, split = losses(reference), losses(other)
    assert sorted(split) == sorted(single) == list(range(1, 9))
    for step, loss in single.items():
        assert abs(split[step] - loss) <= TOLERANCE * loss, (step, split[step], loss)
    for key in keys:
        a, b = metric(reference, key), metric(other, key)
        assert all(b[step] == pytest.approx(value, rel=TOLERANCE) for step, value in a.items())


def test_expert_parallel_2_trains_as_one_process(runs, experts_split):
    """Each rank routes its own 4 samples, the token-slots exchanged with the rank holding
    their experts: the same losses and auxiliary losses as one process over both batches."""
    root, out, _ = experts_split
    assert_same_run(runs[0], root / "ep2")
    assert "expert-parallel 2" in out


def test_expert_parallel_2_with_zero1_over_4_ranks_trains_as_one_process(experts_split):
    root, _, out = experts_split
    assert_same_run(root / "one4", root / "ep2_zero1")
    assert "data 4 (expert-parallel 2)" in out
    # each expert-parallel share's optimizer state in two ZeRO partitions, one per rank
    # holding those experts
    step = root / "ep2_zero1" / "global_step8"
    partitions = sorted(path.name for path in step.glob("zero_pp_rank_*_optim_states.pt"))
    assert partitions == [
        f"zero_pp_rank_{dp}_mp_rank_{mp:02d}_optim_states.pt" for dp in (0, 1) for mp in (0, 1)
    ]
    assert json.loads((step / "layout.json").read_text())["layout"]["zero_stage"] == 1


def test_an_expert_parallel_checkpoint_reads_as_the_whole_model(runs, experts_split):
    """model.json records the expert-parallel split: readers (generation, export) join each
    rank's experts into the whole model, the one the single process trained (to 1e-3 of each
    tensor's largest entry: Adam turns the keys' bias gradients, zero up to rounding, into
    steps of the learning rate's size, so that bias follows rounding; every other tensor
    agrees to 1e-5, and experts joined in the wrong order would differ by their own size)."""
    _, manifest, split = load_state_dict(experts_split[0] / "ep2" / "global_step8")
    _, _, whole = load_state_dict(runs[0] / "global_step8")
    assert (manifest.tensor_parallel, manifest.expert_parallel) == (1, 2)
    assert sorted(split) == sorted(whole)
    for name, tensor in whole.items():
        assert split[name].shape == tensor.shape, name
        error = (split[name] - tensor).abs().max() / tensor.abs().max()
        assert error <= (1e-3 if name.endswith("query_key_value.bias") else 1e-5), name


@pytest.mark.parametrize(("source", "target"), [("ep2", "one"), ("one", "ep2")])
def test_an_moe_run_resumes_at_another_expert_parallel_size(
    data_dir, tmp_path, runs, experts_split, source, target
):
    """The experts joined from the expert-parallel ranks' files and split again, with their
    optimizer state: the run goes on as the uninterrupted one."""
    origin = experts_split[0] / "ep2" if source == "ep2" else runs[0]
    load = step_only(origin, tmp_path / "load", step=4)
    layout = dict(moe_expert_parallel_size=2) if target == "ep2" else {}
    accumulate = {} if layout else dict(gradient_accumulation_steps=2)
    values = config(
        data_dir,
        tmp_path / "save",
        zero_optimization={"stage": 0},
        load=str(load),
        **layout,
        **accumulate,
    )
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 2 if layout else 1)
    assert "was saved at" in out and "at step 4" in out, out[-2000:]
    full, again = losses(origin), losses(tmp_path / "save")
    assert sorted(again) == [5, 6, 7, 8]
    for step in again:
        assert abs(again[step] - full[step]) <= TOLERANCE * full[step], step


def test_expert_parallel_layouts_that_cannot_run_are_refused(data_dir, tmp_path):
    cases = [
        (dict(moe_expert_parallel_size=3), "moe_num_experts 4 do not split over"),
        (dict(moe_expert_parallel_size=2, model_parallel_size=2), "without tensor and pipeline"),
        (dict(moe_expert_parallel_size=2, moe_num_experts=1), "needs mixture-of-experts"),
        (
            dict(moe_expert_parallel_size=2, zero_optimization={"stage": 3}),
            "zero_optimization.stage 3",
        ),
    ]
    for extra, words in cases:
        with pytest.raises(ConfigError, match=words):
            load_run_config(
                [write_config(tmp_path / "bad.yml", config(data_dir, tmp_path, **extra))]
            )


@pytest.fixture(scope="module")
def piped(data_dir, tmp_path_factory):
    """Every layer a mixture (moe_expert_interval 1), in one process and over 2 pipeline
    stages (type:transformer puts one block, so one MoE layer, on each stage)."""
    root = tmp_path_factory.mktemp("moe_pipe")
    common = dict(gradient_accumulation_steps=2, zero_optimization={"stage": 0})
    one = config(data_dir, root / "one", moe_expert_interval=1, **common)
    pp2 = config(
        data_dir,
        root / "pp2",
        moe_expert_interval=1,
        pipe_parallel_size=2,
        pipe_partition_method="type:transformer",
        **common,
    )
    run_workers([write_config(root / "one.yml", one)], 1)
    out = run_workers([write_config(root / "pp2.yml", pp2)], 2)
    return root / "one", root / "pp2", out


def test_two_pipeline_stages_with_moe_layers_train_as_one_process(piped):
    """The MoE statistics travel with the hidden states to the last stage's loss: the same
    losses, the same auxiliary losses."""
    one, pp2, out = piped
    single, staged = losses(one), losses(pp2)
    assert sorted(staged) == list(range(1, 9))
    for step, loss in single.items():
        assert abs(staged[step] - loss) <= TOLERANCE * loss, (step, staged[step], loss)
    for key in ("moe_load_balancing_loss", "moe_z_loss", "moe_max_expert_share"):
        a, b = metric(one, key), metric(pp2, key)
        assert all(b[step] == pytest.approx(value, rel=TOLERANCE) for step, value in a.items())
    assert "moe balance" in out


def test_a_pipelined_moe_run_resumes_in_one_process(data_dir, tmp_path, piped):
    _, pp2, _ = piped
    load = step_only(pp2, tmp_path / "load", step=4)
    values = config(
        data_dir,
        tmp_path / "save",
        moe_expert_interval=1,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": 0},
        load=str(load),
    )
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 1)
    assert "was saved at" in out and "at step 4" in out, out[-2000:]
    full, again = losses(pp2), losses(tmp_path / "save")
    assert sorted(again) == [5, 6, 7, 8]
    for step in again:
        assert abs(again[step] - full[step]) <= TOLERANCE * full[step], step


def test_the_auxiliary_losses_are_logged_apart_from_the_loss(runs):
    one, _, out = runs
    balance = metric(one, "moe_load_balancing_loss")
    assert sorted(balance) == list(range(1, 9))
    # num_experts * sum_e f_e P_e is top_k (2) when balanced, more otherwise
    assert all(2.0 - 1e-6 <= value < 8.0 for value in balance.values()), balance
    shares = metric(one, "moe_max_expert_share"), metric(one, "moe_min_expert_share")
    assert all(
        lo <= 0.25 <= hi for lo, hi in zip(shares[1].values(), shares[0].values(), strict=True)
    )
    assert all(value > 0 for value in metric(one, "moe_z_loss").values())
    assert "moe balance" in out and "expert shares" in out


@pytest.mark.parametrize("layout", ["one process", "expert parallel 2"])
def test_an_moe_run_resumes_exactly(data_dir, tmp_path, runs, experts_split, layout):
    one = layout == "one process"
    source = runs[0] if one else experts_split[0] / "ep2"
    crashed = tmp_path / "crashed"
    shutil.copytree(source, crashed)
    as_if_killed_after(crashed, 4, 8)
    extra = dict(gradient_accumulation_steps=2) if one else dict(moe_expert_parallel_size=2)
    values = config(data_dir, crashed, zero_optimization={"stage": 0}, load=str(crashed), **extra)
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 1 if one else 2)
    assert "resumed from" in out and "at step 4" in out
    full, again = losses(source), losses(crashed)
    assert sorted(again) == [5, 6, 7, 8]
    for step in again:
        assert again[step] == full[step], step


def test_moe_layouts_that_cannot_hold_the_experts_are_refused(data_dir, tmp_path):
    for layout, words in (
        (dict(model_parallel_size=3), "moe_num_experts 4 do not split over model_parallel_size 3"),
        (dict(model_parallel_size=2, sequence_parallel=True), "under sequence_parallel yet"),
    ):
        path = write_config(tmp_path / "run.yml", config(data_dir, tmp_path / "run", **layout))
        with pytest.raises(ConfigError, match=words):
            load_run_config([path])


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_bf16_moe_over_two_ranks_tracks_one_process(data_dir, tmp_path, layout):
    """bf16 (DeepSpeed's bf16 optimizer): the experts' partial outputs summed over the tensor-
    parallel ranks, or the float32 statistics passed between stages, round like any bf16 run:
    within 2% of one process (fp32 gives 1e-5 above), and the loss falls."""
    split = dict(model_parallel_size=2) if layout == "tp2" else dict(pipe_parallel_size=2)
    runs = {}
    for name, extra in (("one", {}), (layout, split)):
        values = config(
            data_dir,
            tmp_path / name,
            moe_expert_interval=1,
            gradient_accumulation_steps=2,
            zero_optimization={"stage": 0},
            bf16={"enabled": True},
            **extra,
        )
        run_workers([write_config(tmp_path / f"{name}.yml", values)], 2 if extra else 1)
        runs[name] = losses(tmp_path / name)
    for step, loss in runs["one"].items():
        assert abs(runs[layout][step] - loss) <= 2e-2 * loss, (step, loss, runs[layout][step])
    assert runs["one"][8] < runs["one"][1]
