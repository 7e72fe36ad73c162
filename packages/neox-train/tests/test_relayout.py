"""Resuming at another layout, model and optimizer state included: a checkpoint saved at one
(tensor, pipeline, data) layout and ZeRO stage, continued at another, gives the losses the run
would have had at the saved layout (relative difference <= 1e-5 over 3 steps; the second and
third depend on the Adam moments, which is shown by losing them)."""

import json

import pytest

from conftest import losses, run_side_by_side, run_workers, step_only, tiny_config, write_config

TOLERANCE = 1e-5
ZERO0 = {"stage": 0}
# name: (processes, overrides)
LAYOUTS = {
    "tp2-pp2": (4, dict(model_parallel_size=2, pipe_parallel_size=2, zero_optimization=ZERO0)),
    # one fp32 replica: ZeRO-1 runs as stage 0, the torch optimizer's own state
    "single-zero1": (1, dict(zero_optimization={"stage": 1})),
    "dp2-zero1": (2, dict(zero_optimization={"stage": 1})),  # ZeRO's flat partitions
}


def config(data_dir, save, layout, **extra):
    _, overrides = LAYOUTS[layout]
    return tiny_config(
        data_dir,
        save,
        train_batch_size=8,
        train_micro_batch_size_per_gpu=2,
        train_iters=8,
        checkpoint_factor=5,
        **overrides,
        **extra,
    )


@pytest.fixture(scope="module")
def saved(data_dir, tmp_path_factory):
    """8 steps straight in each source layout, saving at step 5 and 8."""
    root = tmp_path_factory.mktemp("straight")
    runs = {layout: root / layout for layout in ("tp2-pp2", "single-zero1", "dp2-zero1")}
    configs = {
        layout: write_config(root / f"{layout}.yml", config(data_dir, save, layout))
        for layout, save in runs.items()
    }
    run_side_by_side([([configs[layout]], LAYOUTS[layout][0]) for layout in runs])
    return runs


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("tp2-pp2", "single-zero1"),
        ("single-zero1", "tp2-pp2"),
        ("tp2-pp2", "dp2-zero1"),
        ("dp2-zero1", "single-zero1"),
    ],
)
def test_resume_at_another_layout_continues_the_run(data_dir, tmp_path, saved, source, target):
    load = step_only(saved[source], tmp_path / "load")
    layout = json.loads((load / "global_step5" / "layout.json").read_text())
    assert len(layout["ranks"]) == LAYOUTS[source][0]
    flat = source == "dp2-zero1"  # the two optimizer layouts, both carried over
    assert (layout["layout"]["zero_stage"], layout["optimizer"]) == (
        (1, "flat") if flat else (0, "torch")
    )
    values = config(data_dir, tmp_path / "save", target, load=str(load))
    out = run_workers([write_config(tmp_path / "resume.yml", values)], LAYOUTS[target][0])
    assert "was saved at" in out and "resumed from" in out and "at step 5" in out, out[-2000:]
    straight, resumed = losses(saved[source]), losses(tmp_path / "save")
    assert sorted(resumed) == [6, 7, 8]
    for step, loss in resumed.items():
        assert abs(loss - straight[step]) <= TOLERANCE * abs(straight[step]), (step, loss)


def test_without_the_optimizer_state_the_run_differs(data_dir, tmp_path, saved):
    """The check above can fail: a fresh optimizer (no_load_optim) changes steps 7 and 8."""
    load = step_only(saved["tp2-pp2"], tmp_path / "load")
    values = config(data_dir, tmp_path / "save", "single-zero1", load=str(load), no_load_optim=True)
    run_workers([write_config(tmp_path / "resume.yml", values)], 1)
    straight, resumed = losses(saved["tp2-pp2"]), losses(tmp_path / "save")
    assert abs(resumed[6] - straight[6]) <= TOLERANCE * straight[6]  # the weights carried over
    assert abs(resumed[8] - straight[8]) > 1e-3 * straight[8]
