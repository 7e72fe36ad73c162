"""A DeepSpeed op build killed midway leaves a lock file in the torch extensions cache, and every
later build of that op waits on it forever. `neox train` never hangs on one: the shared-memory
all-reduce DeepSpeed's CPU backend builds is not built at all, and a lock left for the op neox
does build (cpu_adam) stops the run in one line naming the file to delete."""

import time

from conftest import neox, run_config, train_losses, write_yaml

BOUND_S = 240  # a run of these few tiny steps takes well under a minute here
TINY = dict(num_gpus=1, train_micro_batch_size_per_gpu=2, train_iters=2)


def killed_build(cache, op):
    """A fresh extensions cache holding what a build of `op` killed midway leaves."""
    directory = cache / op
    directory.mkdir(parents=True)
    (directory / "lock").write_text("")
    return directory / "lock"


def test_a_lock_left_by_the_shm_op_build_does_not_hang_training(corpus, tmp_path):
    lock = killed_build(tmp_path / "extensions", "deepspeed_shm_comm")
    config = write_yaml(tmp_path / "run.yml", run_config(corpus, tmp_path / "run", **TINY))
    began = time.monotonic()
    result = neox(
        "train", config, timeout=BOUND_S, env={"TORCH_EXTENSIONS_DIR": str(lock.parents[1])}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - began < BOUND_S
    assert sorted(train_losses(tmp_path / "run")) == [1, 2]
    assert "deepspeed_shm_comm" not in result.stdout + result.stderr  # never built


def test_a_lock_left_by_a_cpu_adam_build_stops_the_run_in_one_line(corpus, tmp_path):
    lock = killed_build(tmp_path / "extensions", "cpu_adam")
    values = run_config(
        corpus,
        tmp_path / "run",
        **TINY,
        optimizer={"type": "cpu_adam", "params": {"lr": 1.0e-3}},
        zero_optimization={"stage": 2, "offload_optimizer": {"device": "cpu"}},
    )
    config = write_yaml(tmp_path / "run.yml", values)
    began = time.monotonic()
    result = neox(
        "train", config, timeout=BOUND_S, env={"TORCH_EXTENSIONS_DIR": str(lock.parents[1])}
    )
    assert time.monotonic() - began < BOUND_S
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors, result.stderr[-3000:]
    assert f"rm {lock}" in errors[0] and "did not finish" in errors[0]
    assert "Traceback" not in result.stderr
    assert lock.exists()  # neox names it; the user deletes it
