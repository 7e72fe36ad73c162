"""Helpers for tests that start real worker processes."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import neox_launch
from neox_launch import Machine
from neox_launch.preemption import DEFAULT_SIGNALS

# Prepended to every worker script: `out` is the directory given as argv[1], `mark` writes a file
# there atomically, `wait_for` polls for one (giving up after 30 s so a broken test cannot hang).
WORKER_PRELUDE = """
import os, signal, subprocess, sys, time
out = sys.argv[1]
rank = int(os.environ["RANK"])

def mark(name, text):
    tmp = os.path.join(out, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(out, name))

def wait_for(name):
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(out, name)) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def _is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def worker_argv(tmp_path: Path) -> Callable[[str], list[str]]:
    """``worker_argv(body)``: argv running WORKER_PRELUDE + body with ``out`` = tmp_path."""

    def build(body: str) -> list[str]:
        return [sys.executable, "-c", WORKER_PRELUDE + body, str(tmp_path)]

    return build


@pytest.fixture
def read_file_text(tmp_path: Path) -> Callable[[str], str]:
    """``read_file_text(name)``: the text of tmp_path/name once a worker has written it."""

    def read(name: str) -> str:
        assert _wait_until(lambda: (tmp_path / name).exists()), f"no {name} written"
        return (tmp_path / name).read_text()

    return read


@pytest.fixture
def gone() -> Iterator[Callable[[int], bool]]:
    """``gone(pid)``: waits up to 10 s for the process to end; whether it did.

    Processes still alive when the test ends are killed, so a failing test leaves none behind.
    """
    asked: list[int] = []

    def wait(pid: int) -> bool:
        asked.append(pid)
        return _wait_until(lambda: not _is_alive(pid), timeout=10.0)

    yield wait
    for pid in asked:
        if _is_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    """A launching machine with a small, fixed environment; home and cwd are empty folders."""
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir()
    return Machine(
        environ={
            "PATH": "/venv/bin:/usr/bin",
            "PYTHONPATH": "/src",
            "NCCL_DEBUG": "WARN",
            "HOME": str(tmp_path / "home"),
            "TERM": "xterm",
        },
        cwd=str(tmp_path / "run"),
        python="/venv/bin/python",
        home=str(tmp_path / "home"),
        hostname="node0.cluster",
        is_root=False,
        cpu_count=8,
        gpu_count=4,
    )


@pytest.fixture
def source_env() -> dict[str, str]:
    """This environment with this checkout of neox_launch importable by child processes."""
    source = str(Path(neox_launch.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def start_launcher(source_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``start_launcher(worker, *flags, ignored=None)``: ``python -m neox_launch --nproc-per-node 2
    FLAGS -- worker``, its output captured, every stop signal at its default disposition except
    ``ignored`` (as a shell does for a job started with ``&``). Killed when the test ends."""
    started: list[subprocess.Popen[str]] = []

    def start(worker: list[str], *flags: str, ignored: int | None = None) -> subprocess.Popen[str]:
        def dispositions() -> None:
            for signum in DEFAULT_SIGNALS:
                signal.signal(signum, signal.SIG_IGN if signum == ignored else signal.SIG_DFL)

        launcher = subprocess.Popen(
            [sys.executable, "-m", "neox_launch", "--nproc-per-node", "2", *flags, "--", *worker],
            env=source_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=dispositions,
        )
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.kill()
        launcher.communicate()
