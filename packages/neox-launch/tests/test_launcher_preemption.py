"""Preemption through a real launcher: a stop signal lets the workers save (75 from all of them
is 75 from the launcher), a grace period bounds the wait, a repeat cuts it short, and no worker
outlives a launcher killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from neox_launch.preemption import PREEMPTED

# On any stop signal: note it, "save" for save_seconds, exit 75 (as neox-train does).
SAVER = """
def save_and_stop(signum, frame):
    mark(f"got{rank}", signal.Signals(signum).name)
    time.sleep(save_seconds)
    mark(f"saved{rank}", "")
    os._exit(75)

for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(signum, save_and_stop)
mark(f"pid{rank}", str(os.getpid()))
time.sleep(60)
"""

# Notes SIGTERM and goes on, or (rank 1 with fail_on_stop) exits 3 on it.
STUBBORN = """
def noted(signum, frame):
    mark(f"got{rank}", "SIGTERM")
    if rank == 1 and fail_on_stop:
        os._exit(3)

signal.signal(signal.SIGTERM, noted)
mark(f"pid{rank}", str(os.getpid()))
time.sleep(60)
"""

# On any stop signal: wait for the file "go", then exit 75.
WAITER = """
def wait_then_stop(signum, frame):
    wait_for("go")
    os._exit(75)

for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, wait_then_stop)
mark(f"pid{rank}", str(os.getpid()))
time.sleep(60)
"""


def _pids(read_file_text):
    return [int(read_file_text(f"pid{rank}")) for rank in (0, 1)]


@pytest.mark.parametrize(
    ("signum", "save_seconds"),
    [
        (signal.SIGTERM, 6.0),  # longer than the 5 s the launcher used to give
        (signal.SIGINT, 0.2),
        (signal.SIGUSR1, 0.2),  # sbatch --signal's warning: used to kill the launcher alone
        (signal.SIGUSR2, 0.2),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_a_stop_signal_lets_the_workers_save_and_the_launcher_exits_75(
    signum, save_seconds, start_launcher, worker_argv, read_file_text, tmp_path
):
    launcher = start_launcher(worker_argv(f"save_seconds = {save_seconds}\n{SAVER}"))
    _pids(read_file_text)
    launcher.send_signal(signum)
    _, err = launcher.communicate(timeout=60)

    assert launcher.returncode == PREEMPTED, err
    assert [read_file_text(f"got{rank}") for rank in (0, 1)] == [signum.name] * 2
    assert (tmp_path / "saved0").exists() and (tmp_path / "saved1").exists()
    assert (
        f"received {signum.name}: the workers are saving and stopping; waiting up to 600 s "
        "before killing them"
    ) in err


def test_a_worker_signalled_alone_saves_and_the_others_are_asked_to(
    start_launcher, worker_argv, read_file_text
):
    launcher = start_launcher(worker_argv(f"save_seconds = 0.2\n{SAVER}"))
    pid0, _ = _pids(read_file_text)
    os.kill(pid0, signal.SIGUSR1)  # as a scheduler that signals the workers, not the launcher
    _, err = launcher.communicate(timeout=60)

    assert launcher.returncode == PREEMPTED, err
    assert (read_file_text("got0"), read_file_text("got1")) == ("SIGUSR1", "SIGTERM")
    assert f"worker 0 (pid {pid0}) saved and stopped (exit 75)" in err


def test_workers_still_running_after_the_grace_period_are_killed(
    start_launcher, worker_argv, read_file_text, gone
):
    launcher = start_launcher(
        worker_argv(f"fail_on_stop = False\n{STUBBORN}"), "--preemption-grace-period", "1"
    )
    pids = _pids(read_file_text)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)

    assert launcher.returncode == 128 + signal.SIGTERM  # not 75: nothing was saved
    assert "killing worker 0, worker 1: still running 1 s after SIGTERM" in err
    assert all(gone(pid) for pid in pids)


def test_a_second_signal_a_second_later_kills_the_workers_at_once(
    start_launcher, worker_argv, read_file_text, gone
):
    launcher = start_launcher(worker_argv(f"fail_on_stop = False\n{STUBBORN}"))
    pids = _pids(read_file_text)
    launcher.send_signal(signal.SIGTERM)
    read_file_text("got0"), read_file_text("got1")
    with pytest.raises(subprocess.TimeoutExpired):  # the 600 s grace period has begun
        launcher.wait(timeout=1.2)
    launcher.send_signal(signal.SIGINT)  # Ctrl-C, pressed again
    _, err = launcher.communicate(timeout=30)

    assert launcher.returncode == 128 + signal.SIGTERM
    assert "received SIGINT again: killing the workers now" in err
    assert all(gone(pid) for pid in pids)


def test_signals_arriving_together_are_one_request_to_stop(
    start_launcher, worker_argv, read_file_text, tmp_path
):
    launcher = start_launcher(worker_argv(WAITER))
    pids = _pids(read_file_text)
    # as Slurm signals the launcher and its process group at once
    launcher.send_signal(signal.SIGTERM)
    launcher.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        launcher.wait(timeout=2)
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)  # still saving
    (tmp_path / "go").touch()
    _, err = launcher.communicate(timeout=60)

    assert launcher.returncode == PREEMPTED, err
    assert "killing the workers now" not in err


def test_a_worker_failing_while_the_others_save_ends_the_wait(
    start_launcher, worker_argv, read_file_text, gone
):
    launcher = start_launcher(worker_argv(f"fail_on_stop = True\n{STUBBORN}"))
    pids = _pids(read_file_text)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)  # not the 600 s grace period

    assert launcher.returncode == 128 + signal.SIGTERM
    assert f"worker 1 (pid {pids[1]}) exited with code 3 while stopping" in err
    assert all(gone(pid) for pid in pids)


@pytest.mark.parametrize(
    "supervisor",
    [
        ["neox_launch", "--nproc-per-node=2"],
        [
            "neox_launch.agent",  # what pdsh starts on each node
            "--node-rank=0",
            "--num-nodes=1",
            "--nproc-per-node=2",
            "--master-addr=127.0.0.1",
            "--master-port=29613",
        ],
    ],
    ids=["launcher", "node-agent"],
)
def test_no_worker_outlives_a_supervisor_killed_with_sigkill(
    supervisor, source_env, worker_argv, read_file_text, gone
):
    body = 'mark(f"pid{rank}", str(os.getpid()))\ntime.sleep(60)\n'
    argv = [sys.executable, "-m", *supervisor, "--", *worker_argv(body)]
    process = subprocess.Popen(argv, env=source_env, stderr=subprocess.DEVNULL)
    try:
        pids = _pids(read_file_text)
        process.kill()
        process.wait()
        assert all(gone(pid) for pid in pids)
    finally:
        process.kill()


# A "runner" that exits 0 on SIGTERM, as Hydra's mpirun now and then does for ranks it stopped.
ZERO_ON_SIGTERM = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    open(sys.argv[1], "w").close()
    time.sleep(60)
    """
)
SUPERVISE = textwrap.dedent(
    """
    import os, sys, time
    from neox_launch.supervisor import supervise
    from neox_launch.worker import WorkerCommand

    ready, script, trusted = sys.argv[1], sys.argv[2], sys.argv[3] == "trusted"
    command = WorkerCommand(
        0,
        (sys.executable, "-c", script, ready),
        dict(os.environ),
        label="mpirun",
        zero_after_signal_is_success=trusted,
    )
    sys.exit(supervise([command]))
    """
)


@pytest.mark.parametrize(("trusted", "expected"), [(True, 0), (False, 128 + signal.SIGTERM)])
def test_a_zero_after_a_signal_counts_only_from_a_runner_whose_zero_says_so(
    tmp_path, trusted, expected
):
    ready = tmp_path / "ready"
    argv = [sys.executable, "-c", SUPERVISE, str(ready), ZERO_ON_SIGTERM]
    launcher = subprocess.Popen(
        [*argv, "trusted" if trusted else "hydra"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == expected, err
    if not trusted:
        assert "exited 0 after SIGTERM" in err and "whether they saved is unknown" in err
