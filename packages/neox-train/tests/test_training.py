"""Real training runs: worker processes over gloo, compared with a single process."""

import shutil
import subprocess
import sys

import pytest

from neox_train import load_run_config
from neox_train.metrics import read_metrics

from conftest import run_workers, tiny_config, write_config


def losses(save_dir, key="train_loss"):
    return {r["step"]: r[key] for r in read_metrics(save_dir / "metrics.jsonl") if key in r}


def test_two_rank_zero1_matches_one_rank_with_the_same_global_batch(data_dir, tmp_path):
    one = write_config(
        tmp_path / "one.yml",
        tiny_config(
            data_dir,
            tmp_path / "one",
            train_micro_batch_size_per_gpu=2,
            gradient_accumulation_steps=2,
        ),
    )
    two = write_config(
        tmp_path / "two.yml",
        tiny_config(
            data_dir,
            tmp_path / "two",
            train_micro_batch_size_per_gpu=2,
            gradient_accumulation_steps=1,
        ),
    )
    out = run_workers([one], 1)
    run_workers([two], 2)
    single, double = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(single) == sorted(double) == [1, 2, 3, 4, 5]
    for step in single:
        assert abs(single[step] - double[step]) <= 1e-5 * abs(single[step]), step
    assert single[5] < single[1]  # it learns
    valid_1, valid_2 = (
        losses(tmp_path / "one", "valid_loss"),
        losses(tmp_path / "two", "valid_loss"),
    )
    assert valid_1[5] == pytest.approx(valid_2[5], rel=1e-5)
    assert "validation loss before training at step 0" in out
    assert "step 5/5 | loss" in out and "tokens/s" in out and "ETA" in out


def test_checkpoint_layout(data_dir, tmp_path):
    config = write_config(
        tmp_path / "c.yml",
        tiny_config(
            data_dir,
            tmp_path / "run",
            train_micro_batch_size_per_gpu=2,
            train_iters=4,
            checkpoint_factor=1,
            keep_last_n_checkpoints=2,
        ),
    )
    run_workers([config], 1)
    run = tmp_path / "run"
    assert (run / "latest").read_text().strip() == "global_step4"
    assert sorted(p.name for p in run.glob("global_step*")) == ["global_step3", "global_step4"]
    step = run / "global_step4"
    for name in (
        "model.json",
        "config.yml",
        "tokenizer.json",
        "neox_state.json",
        "mp_rank_00_model_states.pt",
    ):
        assert (step / name).is_file(), name
    assert load_run_config([step / "config.yml"]).run == load_run_config([config]).run


def test_resume_after_a_crash_repeats_the_uninterrupted_run(data_dir, tmp_path):
    values = tiny_config(
        data_dir,
        tmp_path / "full",
        train_micro_batch_size_per_gpu=2,
        train_iters=6,
        checkpoint_factor=3,
        hidden_dropout=0.1,
    )
    run_workers([write_config(tmp_path / "full.yml", values)], 1)
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "full", crashed)
    shutil.rmtree(crashed / "global_step6")  # as if killed after saving step 3
    (crashed / "latest").write_text("global_step3\n")
    (crashed / "metrics.jsonl").unlink()
    resumed = dict(values, save=str(crashed), load=str(crashed))
    out = run_workers([write_config(tmp_path / "resume.yml", resumed)], 1)
    assert "resumed from" in out and "at step 3" in out
    full, again = losses(tmp_path / "full"), losses(crashed)
    assert sorted(again) == [4, 5, 6]
    for step in again:
        assert again[step] == pytest.approx(full[step], rel=1e-6), step


def test_bad_config_fails_with_one_line_and_writes_nothing(data_dir, tmp_path):
    values = tiny_config(data_dir, tmp_path / "never", train_micro_batch_size_per_gpu=2)
    values["hidden_sise"] = 32
    config = write_config(tmp_path / "bad.yml", values)
    proc = subprocess.run(
        [sys.executable, "-m", "neox_train", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"neox-train: error: {config}: unknown key 'hidden_sise'; did you mean 'hidden_size'?"
    ]
    assert not (tmp_path / "never").exists()


def test_generate_from_the_checkpoint(data_dir, tmp_path):
    config = write_config(
        tmp_path / "g.yml",
        tiny_config(data_dir, tmp_path / "run", train_micro_batch_size_per_gpu=2, train_iters=2),
    )
    run_workers([config], 1)
    cmd = [
        sys.executable,
        "-m",
        "neox_train",
        "generate",
        "--checkpoint",
        str(tmp_path / "run"),
        "--prompt",
        "def wrap(",
        "--max-new-tokens",
        "8",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("def wrap(")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.stdout == first.stdout  # greedy is deterministic
