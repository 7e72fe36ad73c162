"""A hung rank is not silent: a rank stopped for real (SIGSTOP) in a running 2-process job makes
the other one's collective time out after distributed_timeout_minutes, and the error names it."""

import signal
import time

from conftest import losses, start_workers, tiny_config, write_config


def test_a_stopped_rank_is_named_when_a_collective_times_out(data_dir, tmp_path):
    save = tmp_path / "run"
    values = tiny_config(
        data_dir,
        save,
        train_micro_batch_size_per_gpu=2,
        train_iters=400,
        checkpoint_factor=1000,
        distributed_timeout_minutes=0.15,  # 9 s
    )
    procs = start_workers([write_config(tmp_path / "long.yml", values)], 2)
    try:
        deadline = time.monotonic() + 120
        while not (save / "metrics.jsonl").exists() or len(losses(save)) < 3:
            assert time.monotonic() < deadline, "training did not start"
            assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-2000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGSTOP)  # as a wedged process: alive, never answering
        stopped_at = time.monotonic()
        out = procs[0].communicate(timeout=120)[0]
        waited = time.monotonic() - stopped_at
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode == 1, out[-2000:]
    error = [line for line in out.splitlines() if line.startswith("neox-train: rank 0: error:")]
    assert error, out[-2000:]
    assert "rank 1 (" in error[-1] and f"pid {procs[1].pid})" in error[-1], error[-1]
    assert "no heartbeat for" in error[-1] and "stopped answering" in error[-1], error[-1]
    assert "rank 0 waited 0.15 min" in error[-1]
    assert 9 <= waited < 100  # the configured timeout, not the 30-minute default
