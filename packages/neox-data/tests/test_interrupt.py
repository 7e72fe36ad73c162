"""A preprocessing run stopped mid-way (Ctrl-C, SIGTERM, SIGKILL) leaves no .bin/.idx pair.

The corpus is a named pipe the test writes into, so the run is provably in the middle of its
input, blocked on a read, when the signal arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def temp_bins(directory: Path) -> list[Path]:
    if not directory.is_dir():  # made once the run has read its first documents
        return []
    return [p for p in directory.iterdir() if p.name.endswith(".bin.tmp")]


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def exit_status(process: subprocess.Popen[str], timeout: float) -> int:
    """The run's exit status; if it has not ended within ``timeout`` seconds, fail with what
    each of its threads was doing: where the kernel has it wait, then its Python stack (SIGABRT,
    which the run's faulthandler answers), and which child processes were still there."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    waits = _thread_waits(process.pid)
    children = _children(process.pid)
    process.send_signal(signal.SIGABRT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    stacks = _read_available(process.stderr)  # workers may hold the pipe open: no EOF to wait for
    raise AssertionError(
        f"the run did not end within {timeout} s (then {process.returncode=} after SIGABRT)\n"
        f"kernel waits of its threads: {waits}\nchildren: {children}\nstderr:\n{stacks}"
    )


def _thread_waits(pid: int) -> dict[str, str]:
    waits = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            waits[f"{task.name} {name}"] = (task / "wchan").read_text() or "running"
    return waits


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: their state and command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == str(pid):
                command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(stat.parent.name)] = f"{fields[0]} {command.decode()[:120]}"
    return found


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # reaped
    return state in ("Z", "X")


def _read_available(stream: Any) -> str:
    fd = stream.fileno()
    os.set_blocking(fd, False)
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            block = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.1)
            continue
        if not block:
            break
        data += block
    return data.decode(errors="replace")


@pytest.mark.parametrize(
    ("signum", "workers", "status"),
    [
        (signal.SIGINT, 2, 130),
        (signal.SIGTERM, 1, 143),
        (signal.SIGKILL, 2, -signal.SIGKILL),
    ],
)
def test_a_signal_mid_run_leaves_no_output_pair(
    tmp_path: Path, tokenizer_path: Path, make_texts, signum: int, workers: int, status: int
) -> None:
    fifo = tmp_path / "corpus.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "neox_data", "preprocess", "--input", str(fifo)]
    argv += ["--vocab-file", str(tokenizer_path), "--output-prefix", str(out / "c")]
    argv += ["--workers", str(workers), "--append-eod"]
    # a fatal signal makes the run print every thread's Python stack (see `exit_status`)
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell's background job inherits SIGINT ignored, and Python keeps it ignored: give
        # the run the disposition of a foreground command, whatever runs these tests.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers_seen: dict[int, str] = {}
    try:
        corpus = fifo.open("w", encoding="utf-8")  # returns once the run opens its input
        corpus.writelines(json.dumps({"text": t}) + "\n" for t in make_texts(600))
        corpus.flush()
        wait_for(lambda: any(p.stat().st_size for p in temp_bins(out)), "tokens on disk")
        workers_seen = _children(process.pid)
        process.send_signal(signum)
        assert exit_status(process, timeout=60) == status, process.stderr.read()
        with contextlib.suppress(BrokenPipeError):  # nobody reads the pipe any more
            corpus.close()
    finally:
        process.kill()
        process.wait()
    # no worker outlives the run, even one killed with SIGKILL
    if workers > 1:  # the workers (and multiprocessing's resource tracker)
        assert len(workers_seen) >= workers, workers_seen
    wait_for(lambda: all(map(_ended, workers_seen)), f"the run's children ending: {workers_seen}")
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.endswith((".bin", ".idx"))], names
    if signum != signal.SIGKILL:  # a catchable signal also removes the temporary files
        assert names == []
        assert "no output written" in process.stderr.read()
