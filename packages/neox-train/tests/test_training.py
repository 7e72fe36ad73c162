"""Real training runs: worker processes over gloo, compared with a single process."""

import functools
import shutil

import pytest

from neox_testing import selected_params, side_by_side
from neox_train import load_run_config
from neox_train.loop.trainer import dropout_seed, schedule_for
from neox_train.monitoring.metrics import read_metrics

from conftest import (
    as_if_killed_after,
    losses,
    neox_train,
    run_side_by_side,
    run_workers,
    tiny_config,
    write_config,
    write_run,
)


def test_two_rank_zero1_matches_one_rank_with_the_same_global_batch(data_dir, tmp_path):
    one = write_run(data_dir, tmp_path, "one", gradient_accumulation_steps=2)
    two = write_run(data_dir, tmp_path, "two", gradient_accumulation_steps=1)
    out, _ = run_side_by_side([([one], 1), ([two], 2)])
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
    config = write_run(
        data_dir, tmp_path, "run", train_iters=4, checkpoint_factor=1, keep_last_n_checkpoints=2
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


LR, LEARNED = 1.0e-2, 4.75  # the learning test's rate and bound
DROPOUT = dict(hidden_dropout=0.1, attention_dropout=0.1)  # a resumed run draws the same masks

RESUME_LAYOUTS = {
    # name: (processes, overrides, tolerance)
    "single": (1, {}, 0.0),
    "dp2-zero1": (2, dict(zero_optimization={"stage": 1}), 1e-6),
    "tp2-pp2": (4, dict(model_parallel_size=2, pipe_parallel_size=2), 1e-6),
    "tp2-sp": (2, dict(model_parallel_size=2, sequence_parallel=True), 1e-6),  # dropout per rank
}


def crash_and_resume(data_dir, root, name):
    """In layout `name`: 10 steps straight into `root / "full"`, then a copy of that run as if
    killed after its step-5 checkpoint (`root / "crashed"`) resumed to step 10. Rank 0's output
    of the resume."""
    processes, overrides, _ = RESUME_LAYOUTS[name]
    values = tiny_config(
        data_dir,
        root / "full",
        train_batch_size=8,
        train_micro_batch_size_per_gpu=2,
        train_iters=10,
        checkpoint_factor=5,
        **DROPOUT,
        **overrides,
    )
    run_workers([write_config(root / "full.yml", values)], processes)
    crashed = root / "crashed"
    shutil.copytree(root / "full", crashed)
    as_if_killed_after(crashed, 5, 10)
    resumed = dict(values, save=str(crashed), load=str(crashed))
    return run_workers([write_config(root / "resume.yml", resumed)], processes)


@pytest.fixture(scope="module")
def resumes(data_dir, tmp_path_factory, request):
    """`crash_and_resume` in each layout this session tests, two layouts at a time
    (`side_by_side`): name -> (its directory, the future of the resume's output)."""
    names = selected_params(
        request, test_resume_after_a_crash_repeats_the_uninterrupted_run, "name"
    )
    roots = {name: tmp_path_factory.mktemp(name) for name in names}
    calls = {name: (crash_and_resume, data_dir, roots[name], name) for name in names}
    return {name: (roots[name], done) for name, done in side_by_side(calls).items()}


@pytest.mark.parametrize("name", sorted(RESUME_LAYOUTS))
def test_resume_after_a_crash_repeats_the_uninterrupted_run(resumes, name):
    """10 steps straight = 5 steps, a checkpoint, a crash, a resume and 5 more steps."""
    _, _, tolerance = RESUME_LAYOUTS[name]
    root, resume = resumes[name]
    out = resume.result()
    assert "resumed from" in out and "at step 5" in out
    crashed = root / "crashed"
    full, again = losses(root / "full"), losses(crashed)
    assert sorted(again) == [6, 7, 8, 9, 10]
    for step in again:
        assert abs(again[step] - full[step]) <= tolerance * abs(full[step]), (step, name)
    assert losses(crashed, "valid_loss")[10] == pytest.approx(
        losses(root / "full", "valid_loss")[10], rel=max(tolerance, 1e-12)
    )


@pytest.fixture(scope="module")
def four_steps(data_dir, tmp_path_factory):
    """A one-process run of 4 steps saving steps 2 and 4, and its config values: what the tests
    below start from (a test that changes it changes a copy)."""
    root = tmp_path_factory.mktemp("four_steps")
    values = tiny_config(
        data_dir, root / "run", train_micro_batch_size_per_gpu=2, train_iters=4,
        checkpoint_factor=2,
    )  # fmt: skip
    run_workers([write_config(root / "run.yml", values)], 1)
    return root / "run", values


def test_finetune_loads_only_the_weights(tmp_path, four_steps):
    source, values = four_steps
    tuned = dict(
        values,
        save=str(tmp_path / "tuned"),
        load=str(source),
        finetune=True,
        train_iters=3,
    )
    out = run_workers([write_config(tmp_path / "tuned.yml", tuned)], 1)
    assert "weights of" in out and "at step 0" in out
    records = read_metrics(tmp_path / "tuned" / "metrics.jsonl")
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3]  # steps restart
    # the run starts from the source's final weights: same validation loss before step 1
    assert losses(tmp_path / "tuned", "valid_loss")[0] == pytest.approx(
        losses(source, "valid_loss")[4], rel=1e-6
    )
    lrs = [r["lr"] for r in records if "lr" in r]  # the schedule restarted
    schedule = schedule_for(load_run_config([tmp_path / "tuned.yml"]).run)
    assert lrs == pytest.approx([schedule.learning_rate(k) for k in (1, 2, 3)])


def test_checkpoint_schedule_and_exit_interval(data_dir, tmp_path):
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=6,
        checkpoint_factor=2,
        checkpoint_scale="log",
        extra_save_iters=[0, 3],
        exit_interval=5,
    )
    run_workers([config], 1)
    steps = sorted(
        int(p.name.removeprefix("global_step")) for p in (tmp_path / "run").glob("global_step*")
    )
    assert steps == [0, 1, 2, 3, 4, 5]  # log: 1, 2, 4; extra: 0, 3; exit_interval: 5
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3, 4, 5]  # stopped at 5 of 6
    assert (tmp_path / "run" / "latest").read_text().strip() == "global_step5"


def test_a_damaged_checkpoint_is_named_and_an_earlier_step_resumes(tmp_path, four_steps):
    shutil.copytree(four_steps[0], tmp_path / "run")  # saved steps 2 and 4
    values = dict(four_steps[1], save=str(tmp_path / "run"))
    damaged = tmp_path / "run" / "global_step4" / "mp_rank_00_model_states.pt"
    damaged.write_bytes(damaged.read_bytes()[:2000])  # as a full disk would leave it
    again = dict(values, load=str(tmp_path / "run"), save=str(tmp_path / "again"))
    proc = neox_train("train", write_config(tmp_path / "a.yml", again))
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    damaged_file = tmp_path / "run" / "global_step4" / "mp_rank_00_model_states.pt"
    assert error.startswith(f"neox-train: error: {damaged_file} is damaged")
    assert f"load: {tmp_path / 'run' / 'global_step2'}`" in error
    # naming the earlier step resumes from it
    earlier = dict(again, load=str(tmp_path / "run" / "global_step2"))
    out = run_workers([write_config(tmp_path / "b.yml", earlier)], 1)
    assert "resumed from" in out and "at step 2" in out
    resumed, first = losses(tmp_path / "again"), losses(tmp_path / "run")
    assert resumed == {step: first[step] for step in (3, 4)}  # the same run, continued exactly


def test_bad_config_fails_with_one_line_and_writes_nothing(data_dir, tmp_path):
    values = tiny_config(data_dir, tmp_path / "never", train_micro_batch_size_per_gpu=2)
    values["hidden_sise"] = 32
    config = write_config(tmp_path / "bad.yml", values)
    proc = neox_train("train", config, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"neox-train: error: {config}: unknown key 'hidden_sise'; did you mean 'hidden_size'?"
    ]
    assert not (tmp_path / "never").exists()


def test_generate_from_the_checkpoint(four_steps):
    args = ["--checkpoint", four_steps[0], "--prompt", "def wrap(", "--max-new-tokens", 8]
    generate = functools.partial(neox_train, "generate", timeout=120)
    runs = side_by_side({run: (generate, *args) for run in ("first", "again")})  # at once
    first, again = (runs[run].result() for run in ("first", "again"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("def wrap(")
    assert again.stdout == first.stdout  # greedy is deterministic


def test_a_tiny_model_learns_the_corpus(data_dir, tmp_path):
    """The validation loss on the standard-library corpus falls from 6.24 (a 400-token
    vocabulary: ln 400 = 5.99) to about 4.53 in 100 steps (measured); the test asks < 4.75."""
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_micro_batch_size_per_gpu=8,
        train_iters=100,
        eval_iters=4,
        warmup=0.1,
        log_interval=20,
        optimizer={"type": "adam", "params": {"lr": LR}},
    )
    run_workers([config], 1)
    valid = losses(tmp_path / "run", "valid_loss")
    assert valid[0] > 5.5
    assert valid[100] < LEARNED, valid


def test_a_diverged_run_skips_steps_then_stops_with_one_line(data_dir, tmp_path):
    """Weights of std 1e30 make every gradient non-finite: each step is skipped (DeepSpeed's
    overflow check), and after max_skipped_steps in a row the run stops."""
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=20,
        init_method_std=1.0e30,
        max_skipped_steps=3,
        eval_iters=0,
    )
    proc = neox_train("train", config)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "neox-train: error: 3 optimizer steps in a row had non-finite gradients (the last at "
        "step 3): the run has diverged; lower the learning rate, check the data, or resume from "
        "an earlier checkpoint"
    )
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["skipped_steps"] for r in records if "train_loss" in r] == [1.0, 2.0]


@pytest.mark.parametrize("pipe", [0, 2])
def test_the_sequence_length_curriculum(data_dir, tmp_path, pipe):
    """DeepSpeed's fixed_linear schedule from 8 to 32 tokens over 4 steps, in steps of 8."""
    curriculum = {
        "enabled": True,
        "curriculum_type": "seqlen",
        "min_difficulty": 8,
        "max_difficulty": 32,
        "schedule_type": "fixed_linear",
        "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 8},
    }
    config = write_run(
        data_dir,
        tmp_path,
        "run",
        train_iters=6,
        curriculum_learning=curriculum,
        pipe_parallel_size=pipe,
    )
    out = run_workers([config], max(pipe, 1))
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train_loss" in r]
    assert [r["seqlen"] for r in records] == [8, 16, 24, 32, 32, 32]
    assert "seqlen 8" in out


def test_sequence_parallel_ranks_draw_their_own_dropout_masks():
    """Replicated activations need the same masks on every tensor-parallel rank; under sequence
    parallelism each rank drops its own positions, and equal seeds would repeat one mask along
    the sequence."""
    assert dropout_seed(7, 3, 0, None) == dropout_seed(7, 3, 0, None)
    assert dropout_seed(7, 3, 0, None) != dropout_seed(7, 3, 1, None)  # data-parallel ranks
    seeds = {dropout_seed(7, 3, 0, rank) for rank in range(4)}
    assert len(seeds) == 4
    assert dropout_seed(7, 4, 0, 1) != dropout_seed(7, 3, 0, 1)  # and each step
