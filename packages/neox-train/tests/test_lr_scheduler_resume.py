"""Which LR schedule a resumed run follows, as GPT-NeoX decides it (override_lr_scheduler,
use_checkpoint_lr_scheduler, finetune): real runs saved at step 4 and resumed with another
schedule in the config. The expected rates are GPT-NeoX's formula, written out here."""

import math

import pytest

from neox_train.monitoring.metrics import read_metrics

from conftest import neox_train, run_workers, tiny_config, write_config


def gpt_neox_lr(step, lr, min_lr, warmup, decay_iters, style):
    """GPT-NeoX's AnnealingLR rate after `step` iterations (what it logs at that step)."""
    if warmup > 0 and step <= warmup:
        return lr * step / warmup
    done, span = step - warmup, decay_iters - warmup
    match style:
        case "linear":
            rate = lr * (span - done) / span
        case "cosine":
            rate = min_lr + (lr - min_lr) / 2 * (math.cos(math.pi * done / span) + 1)
        case _:
            rate = lr
    return max(rate, min_lr)


# the checkpoint's schedule (steps 1-4 trained with it) and the config's on resume: every value
# differs; (lr, min_lr, warmup steps, lr_decay_iters, lr_decay_style)
SAVED = (3.0e-3, 3.0e-4, 2, 8, "cosine")
CONFIG = (1.0e-3, 1.0e-4, 3, 10, "linear")


def schedule_keys(lr, min_lr, warmup, decay_iters, style):
    return dict(
        optimizer={"type": "Adam", "params": {"lr": lr, "betas": [0.9, 0.95]}},
        min_lr=min_lr,
        warmup=warmup,
        lr_decay_iters=decay_iters,
        lr_decay_style=style,
    )


@pytest.fixture(scope="module")
def saved(data_dir, tmp_path_factory):
    """A run saved at step 4 of its 8-step cosine schedule; the values to resume it with."""
    root = tmp_path_factory.mktemp("saved")
    values = tiny_config(
        data_dir, root / "run", train_micro_batch_size_per_gpu=2, train_iters=4,
        **schedule_keys(*SAVED),
    )  # fmt: skip
    run_workers([write_config(root / "run.yml", values)], 1)
    logged = {r["step"]: r["lr"] for r in read_metrics(root / "run" / "metrics.jsonl") if "lr" in r}
    assert logged == pytest.approx({k: gpt_neox_lr(k, *SAVED) for k in (1, 2, 3, 4)})
    return root / "run", dict(values, load=str(root / "run"), train_iters=6)


def resume(tmp_path, saved, **keys):
    """Resume `saved` into tmp_path/resumed with the config's schedule and `keys`; the LR
    logged at each step."""
    values = dict(saved[1], save=str(tmp_path / "resumed"), **schedule_keys(*CONFIG), **keys)
    out = run_workers([write_config(tmp_path / "resume.yml", values)], 1)
    records = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    return out, {r["step"]: r["lr"] for r in records if "lr" in r}


def test_override_lr_scheduler_follows_the_config_from_the_checkpoints_step(tmp_path, saved):
    out, logged = resume(tmp_path, saved, override_lr_scheduler=True)
    assert "resumed from" in out and "at step 4" in out
    assert (
        "LR schedule from step 4: this config's, lr 0.001, min_lr 0.0001, warmup steps 3, "
        "lr_decay_iters 10, lr_decay_style linear"
    ) in out
    assert logged == pytest.approx({5: gpt_neox_lr(5, *CONFIG), 6: gpt_neox_lr(6, *CONFIG)})
    assert logged[5] == pytest.approx(1.0e-3 * 5 / 7)  # linear from 1e-3 at step 3 to 0 at 10


def test_use_checkpoint_lr_scheduler_follows_the_checkpoints_schedule(tmp_path, saved):
    _, logged = resume(tmp_path, saved, use_checkpoint_lr_scheduler=True)
    assert logged == pytest.approx({5: gpt_neox_lr(5, *SAVED), 6: gpt_neox_lr(6, *SAVED)})
    assert logged[5] == pytest.approx(3.0e-4 + 2.7e-3 / 2)  # half way down the cosine
    # the run saved what it followed: resuming it again with the checkpoint's values matches
    again = dict(saved[1], load=str(tmp_path / "resumed"), save=str(tmp_path / "again"))
    run_workers([write_config(tmp_path / "again.yml", dict(again, train_iters=7))], 1)
    records = read_metrics(tmp_path / "again" / "metrics.jsonl")
    assert [r["lr"] for r in records if "lr" in r] == pytest.approx([gpt_neox_lr(7, *SAVED)])


def _files(root):
    """Every file under `root` but the run lock (rewritten by each start), with its size and
    modification time."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name != ".neox_run.lock"
    }


def test_a_schedule_that_differs_from_the_checkpoints_is_refused_naming_the_keys(tmp_path, saved):
    run_dir, values = saved
    before = _files(run_dir)
    changed = dict(values, save=str(run_dir), **schedule_keys(*SAVED[:4], "linear"))
    config = write_config(tmp_path / "changed.yml", dict(changed, min_lr=2.0e-4))
    proc = neox_train("train", config)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error == (
        f"neox-train: error: {run_dir / 'global_step4'} was trained with another learning-rate "
        "schedule than this config's: min_lr 0.0003 there, 0.0002 here; lr_decay_style cosine "
        "there, linear here; set `override_lr_scheduler: true` to follow this config's "
        "schedule from step 4, or `use_checkpoint_lr_scheduler: true` to keep the checkpoint's"
    )
    assert _files(run_dir) == before  # nothing written: no step, no metrics, `latest` as it was


@pytest.mark.parametrize("override", [False, True])
def test_finetune_starts_the_configs_schedule_afresh(tmp_path, saved, override):
    """Whatever override_lr_scheduler says (GPT-NeoX's LLaMA training file sets both): the
    checkpoint's schedule is not read, so it cannot differ."""
    _, logged = resume(tmp_path, saved, finetune=True, override_lr_scheduler=override)
    assert logged == pytest.approx({k: gpt_neox_lr(k, *CONFIG) for k in range(1, 7)})


THIRD = (2.0e-3, 0.0, 0, 12, "cosine")  # a third schedule, for a resume of the resumed run


def test_override_at_another_layout_and_under_zero(tmp_path, saved):
    """Resumed at 2 ranks (the 1-rank checkpoint read through its layout.json), then again at
    2 ranks with ZeRO-1 (DeepSpeed reads its optimizer shards after the schedule)."""
    zero = dict(zero_optimization={"stage": 1}, train_batch_size=4, override_lr_scheduler=True)
    values = dict(saved[1], save=str(tmp_path / "dp2"), **schedule_keys(*CONFIG), **zero)
    run_workers([write_config(tmp_path / "dp2.yml", values)], 2)
    again = dict(values, load=str(tmp_path / "dp2"), save=str(tmp_path / "again"), train_iters=7)
    out = run_workers(
        [write_config(tmp_path / "again.yml", dict(again, **schedule_keys(*THIRD)))], 2
    )
    assert "resumed from" in out and "at step 6" in out
    for run, expected in (("dp2", {5: CONFIG, 6: CONFIG}), ("again", {7: THIRD})):
        records = read_metrics(tmp_path / run / "metrics.jsonl")
        logged = {r["step"]: r["lr"] for r in records if "lr" in r}
        assert logged == pytest.approx({k: gpt_neox_lr(k, *s) for k, s in expected.items()}), run
