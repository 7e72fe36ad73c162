"""The rendezvous shim as a real process: what the command sees, failures, signals."""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from neox_launch import rendezvous

OPENMPI_RANK_1 = {
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "2",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
}


def _shim(env, body, *flags, **popen):
    argv = [sys.executable, "-m", "neox_launch.rendezvous", *flags, "--", sys.executable, "-c"]
    return subprocess.Popen(
        [*argv, body], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_the_command_gets_the_launch_variables(source_env):
    names = "RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT"
    body = f"import os; print(*(os.environ[name] for name in {names!r}.split()))"
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body, "--master-port", "29612")
    out, err = shim.communicate(timeout=30)
    assert shim.returncode == 0, err
    assert out.split() == ["1", "1", "2", "2", "127.0.0.1", "29612"]


def test_a_failing_command_is_reported_with_its_rank_and_code(source_env):
    shim = _shim({**source_env, **OPENMPI_RANK_1}, "raise SystemExit(3)")
    _, err = shim.communicate(timeout=30)
    assert shim.returncode == 3
    assert "rank 1 (local rank 1 on " in err and ") exited with code 3" in err


def test_a_command_killed_by_a_signal_kills_the_shim_the_same_way(source_env):
    shim = _shim(
        {**source_env, **OPENMPI_RANK_1}, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    _, err = shim.communicate(timeout=30)
    assert shim.returncode == -signal.SIGKILL
    assert "was killed by SIGKILL" in err


@pytest.mark.parametrize("code", [0, 75])  # 75: the command saved and stopped (preempted)
def test_sigterm_reaches_the_command(code, source_env, tmp_path):
    body = f"""
import signal, sys, time
def done(signum, frame):
    open({str(tmp_path / "got")!r}, 'w').write(str(signum)); sys.exit({code})
signal.signal(signal.SIGTERM, done)
open({str(tmp_path / "ready")!r}, 'w').close()
time.sleep(60)
"""
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body)
    _wait_for(tmp_path / "ready")
    shim.send_signal(signal.SIGTERM)
    _, err = shim.communicate(timeout=30)
    assert (tmp_path / "got").read_text() == str(int(signal.SIGTERM))
    assert shim.returncode == code and "exited" not in err


def test_a_command_stopped_by_a_passed_signal_gives_the_lowest_failure(source_env, tmp_path):
    body = f"import time; open({str(tmp_path / 'ready')!r}, 'w').close(); time.sleep(60)"
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body)
    _wait_for(tmp_path / "ready")
    shim.send_signal(signal.SIGTERM)
    _, err = shim.communicate(timeout=30)
    assert shim.returncode == 1 and "rank 1" not in err  # stopped, not the cause


class FakeHydra:
    """A Hydra proxy's end of one rank's PMI link: answers init, records what the rank says."""

    def __init__(self, source_env):
        self._hydra, self._rank = socket.socketpair()
        self.heard = []
        self.env = {**source_env, "PMI_RANK": "1", "PMI_SIZE": "2"}
        self.env["PMI_FD"] = str(self._rank.fileno())
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        stream = self._hydra.makefile("rw")
        for line in stream:
            self.heard.append(line.strip())
            if line.startswith("cmd=init"):
                stream.write("cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n")
                stream.flush()

    def start(self, body):
        """The shim under Hydra (MPICH) running ``body``; the link is the shim's alone."""
        flags = ("--scheduler", "mpich", "--nproc-per-node", "2")
        shim = _shim(self.env, body, *flags, pass_fds=[self._rank.fileno()])
        self._rank.close()
        return shim

    def finish(self, shim):
        shim.communicate(timeout=30)
        self._thread.join(timeout=10)


def test_under_hydra_a_failure_aborts_the_job_over_pmi(source_env):
    hydra = FakeHydra(source_env)
    shim = hydra.start("import os, sys; sys.exit(5 if 'PMI_FD' not in os.environ else 6)")
    hydra.finish(shim)
    assert shim.returncode == 5  # the command does not see the link
    assert hydra.heard == ["cmd=init pmi_version=1 pmi_subversion=1", "cmd=abort exitcode=5"]


def test_under_hydra_the_abort_waits_until_the_report_was_read(source_env):
    """Hydra stops relaying a rank's output when the job aborts: the shim aborts only once its
    line naming the failing rank has left the pipe (or after DRAIN_TIMEOUT)."""
    hydra = FakeHydra(source_env)
    shim = hydra.start("raise SystemExit(4)")
    # the report is in the pipe; nobody has read it yet
    assert select.select([shim.stderr], [], [], 30)[0], "the shim wrote nothing"
    time.sleep(0.5)
    assert len(hydra.heard) == 1 and shim.poll() is None  # init only, no abort yet
    report = shim.stderr.readline()
    assert "rank 1 (local rank 1 on " in report and "exited with code 4" in report
    hydra.finish(shim)
    assert shim.returncode == 4
    assert hydra.heard[1:] == ["cmd=abort exitcode=4"]


def test_wait_until_read_gives_up_after_its_timeout():
    read, write = os.pipe()
    try:
        with os.fdopen(write, "w", closefd=False) as stream:
            stream.write("never read\n")
            start = time.monotonic()
            assert not rendezvous.wait_until_read([stream], 0.2)
            assert 0.2 <= time.monotonic() - start < 5
            assert rendezvous.unread_bytes(write) == len("never read\n")
            os.read(read, 100)
            assert rendezvous.wait_until_read([stream], 0.2)
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_the_command_dies_with_the_shim(source_env, tmp_path, gone):
    pid_file = str(tmp_path / "pid")
    body = f"import os, time; open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body)
    _wait_for(tmp_path / "pid")
    shim.kill()
    shim.communicate(timeout=30)
    assert gone(int((tmp_path / "pid").read_text()))


def test_without_scheduler_variables_it_says_what_is_missing(source_env):
    env = {k: v for k, v in source_env.items() if not k.startswith(("OMPI_", "PMI_", "SLURM_"))}
    shim = _shim(env, "pass")
    _, err = shim.communicate(timeout=30)
    assert shim.returncode == 2
    assert "no scheduler rank variable is set" in err


def _wait_for(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return os.fspath(path)
