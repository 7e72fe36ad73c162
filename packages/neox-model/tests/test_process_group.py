"""`LaunchEnv` from the launcher's environment, and `exit_process`: a worker's normal finish does
everything the interpreter's exit would (threads joined, atexit handlers, streams flushed) and
keeps the exit code, with gloo's process group really joined and left."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neox_model import LaunchEnv

WORKER = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    import torch.distributed as dist
    from neox_model import LaunchEnv, exit_process, join_process_group

    out = Path(sys.argv[1])
    join_process_group(LaunchEnv())
    assert dist.is_initialized()

    def late_writer():
        time.sleep(0.3)
        (out / "thread").write_text("joined")

    threading.Thread(target=late_writer).start()
    atexit.register(lambda: (out / "atexit").write_text(str(dist.is_initialized())))
    sys.stdout.write("buffered line without a newline")
    exit_process(3)
    """
)


def test_exit_process_finishes_like_the_interpreter(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered line without a newline"
    assert (tmp_path / "thread").read_text() == "joined"
    # handlers run last-registered first: the process group was still joined when ours ran,
    # and `join_process_group`'s own handler left it afterwards
    assert (tmp_path / "atexit").read_text() == "True"


def test_launch_env_reads_the_launcher_variables() -> None:
    env = LaunchEnv.from_environ(
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "h0", "MASTER_PORT": "2"}
    )
    assert env == LaunchEnv(3, 1, 4, "h0", 2)
    assert env.init_method() == "tcp://h0:2"
    assert LaunchEnv.from_environ({}) == LaunchEnv()
    with pytest.raises(ValueError, match="MASTER_PORT"):
        LaunchEnv(world_size=2).init_method()


def test_exit_process_stops_idle_thread_pool_workers(tmp_path: Path) -> None:
    """A ThreadPoolExecutor's idle workers wait for threading's own exit hook; without it the
    join never returns (this hung until the hook ran first, as the interpreter runs it)."""
    worker = textwrap.dedent(
        """
        import atexit
        from concurrent.futures import ThreadPoolExecutor
        from neox_model import exit_process

        atexit.register(print, "atexit ran")
        ThreadPoolExecutor(2).submit(print, "work done").result()
        exit_process(5)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", worker], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 5, result.stderr
    assert result.stdout.split("\n")[:2] == ["work done", "atexit ran"]


def test_on_a_gpu_cpu_tensors_reduce_over_gloo_beside_nccl(monkeypatch) -> None:
    """The training loop reduces small CPU tensors (loss means, flags) on every backend: on a GPU
    the group must hold gloo for them beside NCCL."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    device, backend = LaunchEnv(local_rank=1).device()
    assert device == torch.device("cuda", 1)
    assert backend == "cpu:gloo,cuda:nccl"
