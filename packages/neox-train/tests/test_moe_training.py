"""Training a mixture-of-experts model: worker processes over gloo against one process, the
auxiliary losses in the training loss and in the metrics, exact resume."""

import shutil

import pytest

from neox_train import ConfigError, load_run_config
from neox_train.monitoring.metrics import read_metrics

from conftest import as_if_killed_after, losses, run_workers, tiny_config, write_config

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
    return tiny_config(
        data_dir,
        save,
        **MOE,
        train_batch_size=8,
        train_micro_batch_size_per_gpu=4,
        train_iters=8,
        checkpoint_factor=4,
        **extra,
    )


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
    out = run_workers([write_config(root / "one.yml", one)], 1)
    run_workers([write_config(root / "two.yml", two)], 2)
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


def test_an_moe_run_resumes_exactly(data_dir, tmp_path, runs):
    one, _, _ = runs
    crashed = tmp_path / "crashed"
    shutil.copytree(one, crashed)
    as_if_killed_after(crashed, 4, 8)
    values = config(
        data_dir,
        crashed,
        gradient_accumulation_steps=2,
        zero_optimization={"stage": 0},
        load=str(crashed),
    )
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 1)
    assert "resumed from" in out and "at step 4" in out
    full, again = losses(one), losses(crashed)
    assert sorted(again) == [5, 6, 7, 8]
    for step in again:
        assert again[step] == full[step], step


def test_moe_layers_under_tensor_or_pipeline_parallelism_are_refused(data_dir, tmp_path):
    for layout in (dict(model_parallel_size=2), dict(pipe_parallel_size=2)):
        path = write_config(tmp_path / "run.yml", config(data_dir, tmp_path / "run", **layout))
        with pytest.raises(
            ConfigError, match=r"mixture-of-experts layers \(moe_num_experts 4\) run at"
        ):
            load_run_config([path])
