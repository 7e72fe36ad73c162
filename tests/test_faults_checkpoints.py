"""Fault injection around checkpoints, each case a real `neox` process tree on CPU: kills during
saves, a second start on a held run directory, planted pickles, flipped bytes, a missing
`latest`, a mistyped `load`, another model's steps, a full disk, and the umask."""

import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch

from neox_model.checkpoint import FILES, LATEST, seal_step
from neox_testing import selected_params, side_by_side

from conftest import hooked, neox, neox_process, run_config, train_losses, write_yaml

STEPS = 6


def config(corpus, save, path, **overrides):
    values = dict(
        num_gpus=2,
        train_micro_batch_size_per_gpu=2,
        train_iters=STEPS,
        lr_decay_iters=STEPS + 2,  # the schedule of the resumes below, which train longer
        checkpoint_factor=1,
        seed=5,
    )
    values.update(overrides)
    return write_yaml(path, run_config(corpus, save, **values))


def snapshot(directory):
    """Every file under `directory` with its bytes: what "nothing was touched" compares."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in ("metrics.jsonl", ".neox_run.lock")
    }


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run that saves after every step: the losses every resume must give."""
    root = tmp_path_factory.mktemp("reference")
    save = root / "run"
    result = neox("train", config(corpus, save, root / "run.yml"))  # under umask 022
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return save, train_losses(save)


def copy_run(reference, tmp_path):
    save = tmp_path / "run"
    shutil.copytree(reference[0], save)
    (save / ".neox_run.lock").unlink(missing_ok=True)
    return save


def children(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def kill_during_a_save_then_resume(save, yml, step, delay):
    """A run killed with SIGKILL, launcher and workers at once, `delay` seconds into its save of
    step `step`, then started again: (step, delay, `latest` after the kill, whether the killed
    step was sealed) and the second start's result."""
    proc = neox_process("train", yml, env=hooked(NEOX_FAULT_WRITE_SECONDS=0.15))
    marker = save / f"global_step{step}" / ".neox_save"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the save never started"
        time.sleep(0.01)
    time.sleep(delay)
    workers = children(proc.pid)
    for pid in [*workers, proc.pid]:  # the whole node dies at once
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    latest = (save / LATEST).read_text().strip() if (save / LATEST).exists() else None
    kind = (step, round(delay, 2), latest, (save / marker.parent / FILES).exists())
    if latest is not None:  # `latest` only ever names a complete step
        assert (save / latest / FILES).is_file()
    return kind, neox("train", yml)


def test_kill_9_at_random_moments_during_saves_then_resume_gives_the_same_losses(
    corpus, reference, tmp_path
):
    chooser = random.Random(20261206)
    trials = []
    for trial in range(3):
        save = tmp_path / f"run{trial}"
        yml = config(corpus, save, tmp_path / f"c{trial}.yml")
        step = chooser.randint(2, STEPS - 1)  # the save to kill, and a moment inside it
        delay = chooser.uniform(0.0, 1.4)
        trials.append((save, yml, step, delay))
    # the trials are independent runs: all three at once (each waits on its saves' sleeps)
    calls = {trial: (kill_during_a_save_then_resume, *t) for trial, t in enumerate(trials)}
    outcomes = [done.result() for done in side_by_side(calls, lanes=len(calls)).values()]
    kinds = [kind for kind, _ in outcomes]
    for trial, ((save, *_), (kind, result)) in enumerate(zip(trials, outcomes, strict=True)):
        latest = kind[2]
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert ("resumed from" if latest else "starting from scratch") in result.stdout
        losses, expected = train_losses(save), reference[1]
        assert sorted(losses) == sorted(expected)
        for n, loss in expected.items():
            assert losses[n] == pytest.approx(loss, rel=1e-6), (trial, n, kinds)
        assert not list(save.glob("global_step*/.neox_save.*"))
    print("kills (step, seconds into the save, latest after, step sealed):", kinds)


def test_a_second_start_on_a_held_run_directory_is_refused(corpus, tmp_path):
    save = tmp_path / "run"
    yml = config(corpus, save, tmp_path / "c.yml", train_iters=50)
    first = neox_process("train", yml, env=hooked(NEOX_FAULT_STEP_SECONDS=2))
    try:
        deadline = time.monotonic() + 300
        while not (save / "metrics.jsonl").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        holders = (save / ".neox_run.lock").read_text()
        second = neox("train", yml)
        message = one_line_error(second)
        assert f"{save} is in use by another run" in message
        for pid in children(first.pid):
            assert str(pid) in message  # the workers that hold it, by pid
        assert first.poll() is None  # the first run goes on, its lock untouched
        assert (save / ".neox_run.lock").read_text() == holders
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        for pid in children(first.pid):
            os.kill(pid, signal.SIGKILL)
        first.communicate()


class WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_planted_pickle_is_refused_everywhere_and_runs_nothing(corpus, reference, tmp_path):
    save = copy_run(reference, tmp_path)
    step = save / f"global_step{STEPS}"
    target = tmp_path / "pwned"
    model_file = step / "mp_rank_00_model_states.pt"
    state = torch.load(model_file, weights_only=True)
    state["payload"] = WritesAFile(str(target))
    torch.save(state, model_file)
    seal_step(step)  # the planter rewrote files.json as well: the checksums pass
    task = tmp_path / "task.yaml"
    (tmp_path / "docs.jsonl").write_text('{"text": "def main(): return 1"}\n')
    files = {"data_files": {"test": str(tmp_path / "docs.jsonl")}}
    write_yaml(
        task,
        dict(
            task="pickle_ppl",
            dataset_path="json",
            dataset_kwargs=files,
            test_split="test",
            output_type="loglikelihood_rolling",
            doc_to_text="",
            doc_to_target="{{text}}",
            metric_list=[{"metric": "word_perplexity"}],
        ),
    )
    resume = config(corpus, save, tmp_path / "resume.yml", train_iters=STEPS + 2)
    attempts = {
        "to-hf": ("convert", "to-hf", "--input_dir", save, "--output_dir", tmp_path / "hf"),
        "generate": ("generate", "--checkpoint", save, "--prompt", "def"),
        "eval": ("eval", "--checkpoint", save, "--eval_tasks", task, "--limit", "1"),
        "resume": ("train", resume),
    }
    for name, args in attempts.items():
        message = one_line_error(neox(*args))
        assert "refused: unpickling it would call" in message, (name, message)
        assert "mp_rank_00_model_states.pt" in message, (name, message)
        assert not target.exists(), name
    assert not (tmp_path / "hf").exists()
    assert (save / LATEST).read_text().strip() == f"global_step{STEPS}"


KINDS = [
    "mp_rank_00_model_states.pt",
    "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    "model.json",
    "layout.json",
    "config.yml",
    "neox_state.json",
    "tokenizer.json",
    FILES,
]


EXPORTED = ("mp_rank_00_model_states.pt", "model.json", "tokenizer.json")  # an export reads


def flip_a_byte_then_start(corpus, reference, root, kind):
    """A copy of the reference run under `root` with one bit of its file `kind` flipped, then
    `neox train` for 2 more steps on it and, for a file an export reads, `neox convert to-hf`:
    the file, the run's files before and after the training, and the two results."""
    save = copy_run(reference, root)
    step = save / f"global_step{STEPS}"
    victim = save / LATEST if kind == LATEST else step / kind
    data = bytearray(victim.read_bytes())
    data[-2 if kind == LATEST else len(data) // 2] ^= 0x01  # global_step6 -> global_step7
    victim.write_bytes(bytes(data))
    before = snapshot(save)
    result = neox("train", config(corpus, save, root / "c.yml", train_iters=STEPS + 2))
    after = snapshot(save)
    export = None
    if kind in EXPORTED:
        export = neox("convert", "to-hf", "--input_dir", save, "--output_dir", root / "hf")
    return victim, before, result, after, export


@pytest.fixture(scope="module")
def flipped(corpus, reference, tmp_path_factory, request):
    """`flip_a_byte_then_start` for each file this session tests, two at a time
    (`side_by_side`): file -> its future."""
    test = test_a_flipped_byte_in_any_checkpoint_file_is_refused_by_name
    kinds = selected_params(request, test, "kind")
    root = {kind: tmp_path_factory.mktemp("flipped") for kind in kinds}
    return side_by_side(
        {kind: (flip_a_byte_then_start, corpus, reference, root[kind], kind) for kind in kinds}
    )


@pytest.mark.parametrize("kind", [*KINDS, LATEST])
def test_a_flipped_byte_in_any_checkpoint_file_is_refused_by_name(flipped, kind):
    victim, before, result, after, export = flipped[kind].result()
    message = one_line_error(result)
    assert str(victim) in message, message
    assert f"global_step{STEPS - 1}" in message  # the earlier complete step to go back to
    assert after == before  # nothing written, nothing removed
    if kind in EXPORTED:
        assert str(victim) in one_line_error(export)


def test_a_missing_latest_or_a_mistyped_load_stops_and_overwrites_nothing(
    corpus, reference, tmp_path
):
    save = copy_run(reference, tmp_path)
    (save / LATEST).unlink()
    before = snapshot(save)
    longer = dict(train_iters=STEPS + 2)
    message = one_line_error(neox("train", config(corpus, save, tmp_path / "a.yml", **longer)))
    assert "holds complete steps that no `latest` names" in message
    assert "overwrite_save" in message and "global_step6" in message
    assert snapshot(save) == before

    typo = tmp_path / "rnu"
    for finetune in (False, True):
        yml = config(
            corpus, tmp_path / "new", tmp_path / "b.yml", load=str(typo), finetune=finetune
        )
        message = one_line_error(neox("train", yml))
        assert f"{typo} does not exist (did you mean {save}?)" in message
        assert not (tmp_path / "new" / "global_step1").exists()

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    yml = config(corpus, tmp_path / "new", tmp_path / "c.yml", load=str(unrelated))
    assert "holds no neox checkpoint" in one_line_error(neox("train", yml))

    step_yml = config(corpus, save, tmp_path / "d.yml", load=str(save / "global_step4"), **longer)
    message = one_line_error(neox("train", step_yml))  # going back would mix two futures
    assert "steps newer than global_step4" in message and "global_step5, global_step6" in message
    assert snapshot(save) == before


def test_another_models_steps_are_refused_then_moved_aside_when_asked(corpus, reference, tmp_path):
    save = copy_run(reference, tmp_path)
    before = snapshot(save)
    wider = config(corpus, save, tmp_path / "w.yml", hidden_size=128)
    message = one_line_error(neox("train", wider))
    assert "another model's steps (hidden_size 64 there, 128 here)" in message
    assert snapshot(save) == before
    result = neox(
        "train",
        config(
            corpus, save, tmp_path / "o.yml", hidden_size=128, train_iters=2, overwrite_save=True
        ),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "starting from scratch" in result.stdout
    (aside,) = save.glob("replaced_*")
    moved = {k: v for k, v in before.items() if k.startswith("global_step") or k == LATEST}
    assert snapshot(aside) == moved and len(moved) > 6 * 8
    assert (save / LATEST).read_text().strip() == "global_step2"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_save_is_one_line(corpus, tmp_path, small_disk):
    save = small_disk / "run"
    result = neox("train", config(corpus, save, tmp_path / "c.yml"))
    message = one_line_error(result)
    assert "no space left on device writing" in message and str(save) in message
    assert (
        not (save / LATEST).exists()
        or (save / (save / LATEST).read_text().strip() / FILES).is_file()
    )


def test_checkpoint_files_are_readable_by_others_under_umask_022(reference):
    save, _ = reference
    files = [p for p in save.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) > 10
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))
