"""Signals, the launcher and errors from every rank, each case a real `neox train` process tree
on CPU (2 workers): a preemption signal mid-step saves and exits 75, and the resumed run's
losses are an uninterrupted run's; a launcher killed with SIGKILL leaves no worker; an error on
rank 1 alone is shown with its rank; `neox check` uses the world size `neox train` would."""

import functools
import os
import signal
import time
from pathlib import Path

import pytest

from neox_launch import PEER_LOST, PREEMPTED, PreemptionPolicy
from neox_testing import selected_params, side_by_side
from neox_train import LaunchConfig

from conftest import hooked, neox, neox_process, run_config, train_losses, write_yaml

STEPS = 4
SLOW_STEP = 12  # seconds: longer than the 5 s grace the launcher used to give


def config(corpus, save, path, **overrides):
    values = dict(num_gpus=2, train_micro_batch_size_per_gpu=2, train_iters=STEPS, seed=5)
    values.update(overrides)
    return write_yaml(path, run_config(corpus, save, **values))


def workers_of(pid):
    """The child processes of `pid`, from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def descendants(pid):
    """Every process below `pid`."""
    below = workers_of(pid)
    return below + [grandchild for child in below for grandchild in descendants(child)]


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def wait_until(condition, proc, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"neox train ended ({proc.returncode}) before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)


def wait_for_first_step(save, proc):
    """Until step 1 is in the run's metrics (the workers are training)."""
    metrics = save / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and 1 in train_losses(save), proc, "first step")


def uninterrupted(corpus, root):
    """step -> loss of the run trained to the end without a signal."""
    result = neox("train", config(corpus, root / "run", root / "run.yml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return train_losses(root / "run")


def preempt_then_resume(corpus, root, signum, target):
    """A run sent `signum` (to its launcher, or to the whole job) while step 2 runs, then the same
    command again, as a requeued job runs it: the first run's exit code, stderr, `latest` and
    trained steps, the second run's result and its step -> loss."""
    save = root / "run"
    yml = config(corpus, save, root / "run.yml")
    # step 1 at full speed; step 2, the one the signal lands in, and later ones slow
    slow = hooked(NEOX_FAULT_STEP_SECONDS=SLOW_STEP, NEOX_FAULT_SLOW_FROM=2)
    proc = neox_process("train", yml, env=slow)
    try:
        wait_for_first_step(save, proc)
        # step 2 is under way: it takes SLOW_STEP seconds
        if target == "launcher":
            os.kill(proc.pid, signum)
        else:  # as Slurm does: the launcher's process group and every worker, all at once
            workers = workers_of(proc.pid)
            os.killpg(proc.pid, signum)
            for pid in workers:
                os.kill(pid, signum)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    latest = (save / "latest").read_text().strip() if (save / "latest").exists() else None
    stopped = (proc.returncode, err, latest, sorted(train_losses(save)))
    resumed = neox("train", yml)
    return stopped, resumed, train_losses(save)


PREEMPTIONS = [(signal.SIGTERM, "launcher"), (signal.SIGUSR1, "job")]


@pytest.fixture(scope="module")
def preemptions(corpus, tmp_path_factory, request):
    """The uninterrupted run and each preemption this session tests at once (`side_by_side`):
    most of their time is the slow step's sleep. "uninterrupted" and each signal -> its
    future."""
    test = test_a_preemption_signal_mid_step_saves_exits_75_and_the_resume_matches
    calls = {"uninterrupted": (uninterrupted, corpus, tmp_path_factory.mktemp("uninterrupted"))}
    for signum, target in selected_params(request, test, "signum", "target"):
        root = tmp_path_factory.mktemp(signum.name)
        calls[signum] = (preempt_then_resume, corpus, root, signum, target)
    return side_by_side(calls, lanes=len(calls))


@pytest.mark.parametrize(
    ("signum", "target"),
    PREEMPTIONS,
    ids=["SIGTERM-to-the-launcher", "SIGUSR1-to-the-whole-job"],
)
def test_a_preemption_signal_mid_step_saves_exits_75_and_the_resume_matches(
    signum, target, preemptions
):
    (returncode, err, latest, trained), resumed, losses = preemptions[signum].result()
    assert returncode == PREEMPTED, err[-3000:]
    assert f"neox train: received {signum.name}: the workers are saving and stopping" in err
    assert latest == "global_step2"
    assert trained == [1, 2]

    # the same command again, as a requeued job runs it
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses == preemptions["uninterrupted"].result()


def test_no_worker_outlives_a_launcher_killed_with_sigkill(corpus, tmp_path):
    save = tmp_path / "run"
    yml = config(corpus, save, tmp_path / "run.yml")
    proc = neox_process("train", yml, env=hooked(NEOX_FAULT_STEP_SECONDS=SLOW_STEP))
    workers = []
    try:  # set up and about to train: the validation before step 1 is in the metrics
        wait_until((save / "metrics.jsonl").exists, proc, "metrics")
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        proc.kill()
        proc.wait()  # not communicate(): the workers hold its output pipes open
        deadline = time.monotonic() + 10
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their launcher"
    finally:
        proc.kill()
        for pid in filter(alive, workers):
            os.kill(pid, signal.SIGKILL)
        proc.communicate()


@pytest.fixture(scope="module")
def rank_1_errors(corpus, tmp_path_factory, request):
    """A run whose rank 1 raises in its first step, for each kind of error this session tests,
    both at once (`side_by_side`): kind -> the future of its result."""
    test, calls = test_an_error_on_rank_1_alone_is_shown_with_its_rank, {}
    for kind in selected_params(request, test, "kind"):
        root = tmp_path_factory.mktemp(kind)
        train = functools.partial(neox, env=hooked(NEOX_FAULT_RAISE=f"1:{kind}"))
        calls[kind] = (train, "train", config(corpus, root / "run", root / "run.yml"))
    return side_by_side(calls)


@pytest.mark.parametrize("kind", ["user", "bug"])
def test_an_error_on_rank_1_alone_is_shown_with_its_rank(kind, rank_1_errors):
    result = rank_1_errors[kind].result()
    err = result.stderr
    if kind == "user":
        assert result.returncode == 2, err[-3000:]
        assert "neox-train: rank 1: error: a user error planted on rank 1\n" in err, err[-3000:]
    else:
        assert result.returncode == 1, err[-3000:]
        assert "Traceback (most recent call last)" in err
        assert 'raise KeyError(f"a bug planted on rank {_RAISE_RANK}")' in err
        assert (
            "neox-train: rank 1: error: KeyError: 'a bug planted on rank 1' "
            "(a bug: the traceback is above)"
        ) in err
    assert "neox train: worker 1 (pid" in err
    # rank 0, whose collective lost rank 1, says so in a line, not with a second traceback
    assert err.count("Traceback (most recent call last)") == (1 if kind == "bug" else 0)


def test_neox_check_computes_at_the_world_size_neox_train_uses(corpus, tmp_path):
    # 8 = 4 per worker x 1 accumulation step x 2 workers: only 2 workers can run this batch
    yml = config(
        corpus,
        tmp_path / "run",
        tmp_path / "run.yml",
        train_batch_size=8,
        train_micro_batch_size_per_gpu=4,
        gradient_accumulation_steps=1,
    )
    checked = neox("check", yml)
    assert checked.returncode == 0, checked.stderr
    assert "data_parallel=2" in checked.stdout
    assert neox("train", yml, "--dry-run").returncode == 0
    one = neox("check", yml, "--world-size", 1)  # the flag still decides
    assert one.returncode == 2
    assert "train_batch_size (8) != train_micro_batch_size_per_gpu (4)" in one.stderr


def test_neox_train_and_neox_launch_catch_the_same_signals():
    assert LaunchConfig().signals == PreemptionPolicy().signals


def test_neox_train_and_neox_launch_agree_on_the_lost_peer_exit_code():
    from neox_train.parallel.watchdog import PEER_LOST as TRAIN_PEER_LOST

    assert TRAIN_PEER_LOST == PEER_LOST not in (0, 1, 2, PREEMPTED)
