"""The rendezvous shim as a real process: what the command sees, failures, signals."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

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


def test_sigterm_reaches_the_command(source_env, tmp_path):
    body = f"""
import signal, sys, time
def done(signum, frame):
    open({str(tmp_path / "got")!r}, 'w').write(str(signum)); sys.exit(0)
signal.signal(signal.SIGTERM, done)
open({str(tmp_path / "ready")!r}, 'w').close()
time.sleep(60)
"""
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body)
    _wait_for(tmp_path / "ready")
    shim.send_signal(signal.SIGTERM)
    _, err = shim.communicate(timeout=30)
    assert (tmp_path / "got").read_text() == str(int(signal.SIGTERM))
    assert shim.returncode == 0 and "exited" not in err


def test_a_command_stopped_by_a_passed_signal_gives_the_lowest_failure(source_env, tmp_path):
    body = f"import time; open({str(tmp_path / 'ready')!r}, 'w').close(); time.sleep(60)"
    shim = _shim({**source_env, **OPENMPI_RANK_1}, body)
    _wait_for(tmp_path / "ready")
    shim.send_signal(signal.SIGTERM)
    _, err = shim.communicate(timeout=30)
    assert shim.returncode == 1 and "rank 1" not in err  # stopped, not the cause


def test_under_hydra_a_failure_aborts_the_job_over_pmi(source_env):
    hydra, rank = socket.socketpair()
    heard = []

    def proxy():  # answers init, then records what the rank says until it hangs up
        stream = hydra.makefile("rw")
        for line in stream:
            heard.append(line.strip())
            if line.startswith("cmd=init"):
                stream.write("cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n")
                stream.flush()

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    env = {**source_env, "PMI_RANK": "1", "PMI_SIZE": "2", "PMI_FD": str(rank.fileno())}
    body = "import os, sys; sys.exit(5 if 'PMI_FD' not in os.environ else 6)"
    shim = _shim(
        env, body, "--scheduler", "mpich", "--nproc-per-node", "2", pass_fds=[rank.fileno()]
    )
    shim.communicate(timeout=30)
    rank.close()
    thread.join(timeout=10)
    assert shim.returncode == 5  # the command does not see the link
    assert heard == ["cmd=init pmi_version=1 pmi_subversion=1", "cmd=abort exitcode=5"]


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
