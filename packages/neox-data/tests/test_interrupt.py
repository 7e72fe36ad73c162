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
    """The run's exit status; if it has not ended within ``timeout`` seconds, fail with the stack
    of each of its threads (SIGABRT, which the run's faulthandler answers with them)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            stderr = "(no stack: the run did not end on SIGABRT either)"
        raise AssertionError(
            f"the run did not end within {timeout} s; its threads:\n{stderr}"
        ) from None


@pytest.mark.parametrize(
    ("signum", "workers", "status"),
    [
        (signal.SIGINT, 2, 130),
        (signal.SIGTERM, 1, 143),
        (signal.SIGKILL, 1, -signal.SIGKILL),
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
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    try:
        corpus = fifo.open("w", encoding="utf-8")  # returns once the run opens its input
        corpus.writelines(json.dumps({"text": t}) + "\n" for t in make_texts(600))
        corpus.flush()
        wait_for(lambda: any(p.stat().st_size for p in temp_bins(out)), "tokens on disk")
        process.send_signal(signum)
        assert exit_status(process, timeout=60) == status, process.stderr.read()
        with contextlib.suppress(BrokenPipeError):  # nobody reads the pipe any more
            corpus.close()
    finally:
        process.kill()
        process.wait()
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.endswith((".bin", ".idx"))], names
    if signum != signal.SIGKILL:  # a catchable signal also removes the temporary files
        assert names == []
        assert "no output written" in process.stderr.read()
