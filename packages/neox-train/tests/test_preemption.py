"""A real SIGTERM to a running 2-process job: it saves, exits 75, and the next start resumes."""

import signal
import time

from neox_train.loop.preemption import PREEMPTED
from neox_train.monitoring.metrics import read_metrics

from conftest import run_workers, start_workers, tiny_config, write_config


def train_steps(save):
    path = save / "metrics.jsonl"
    if not path.exists():
        return []
    return [r["step"] for r in read_metrics(path) if "train_loss" in r]


def test_sigterm_saves_exits_75_and_the_next_start_resumes(data_dir, tmp_path):
    save = tmp_path / "run"
    values = tiny_config(
        data_dir,
        save,
        train_micro_batch_size_per_gpu=2,
        train_iters=400,
        lr_decay_iters=400,  # the schedule stays when train_iters is shortened below
        checkpoint_factor=1000,
    )
    config = write_config(tmp_path / "long.yml", values)
    procs = start_workers([config], 2)
    deadline = time.monotonic() + 120
    while len(train_steps(save)) < 3:
        assert time.monotonic() < deadline, "training did not start"
        assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-2000:]
        time.sleep(0.2)
    for proc in procs:  # as Slurm does: every task gets the signal
        proc.send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [PREEMPTED, PREEMPTED], outputs[0][-2000:]
    stopped = max(train_steps(save))
    assert stopped < 400
    assert (save / "latest").read_text().strip() == f"global_step{stopped}"
    assert f"preempted: stopping after step {stopped}" in outputs[0]

    short = dict(values, train_iters=stopped + 3)  # the same run, to a nearer end
    out = run_workers([write_config(tmp_path / "again.yml", short)], 2)
    assert f"resumed from {save} at step {stopped}" in out
    assert train_steps(save)[-3:] == [stopped + 1, stopped + 2, stopped + 3]
