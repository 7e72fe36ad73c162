"""The neox-launch command line, in process and as a real launcher process."""

import shlex
import signal
import subprocess
import sys

import pytest

from neox_launch.cli import main

SLEEPER = """
mark(f"pid{rank}", str(os.getpid()))
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_the_workers(
    signum, start_launcher, worker_argv, read_file_text, gone
):
    launcher = start_launcher(worker_argv(SLEEPER))
    pids = [int(read_file_text(f"pid{rank}")) for rank in (0, 1)]
    launcher.send_signal(signum)
    _, err = launcher.communicate(timeout=30)

    assert launcher.returncode == 128 + signum
    assert all(gone(pid) for pid in pids)
    assert f"received {signum.name}" in err


def test_a_signal_the_launcher_was_started_ignoring_stays_ignored(
    start_launcher, worker_argv, read_file_text
):
    launcher = start_launcher(worker_argv(SLEEPER), ignored=signal.SIGINT)
    read_file_text("pid0"), read_file_text("pid1")
    launcher.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        launcher.wait(timeout=0.5)
    launcher.send_signal(signal.SIGTERM)
    launcher.communicate(timeout=30)
    assert launcher.returncode == 128 + signal.SIGTERM


def test_dry_run_prints_one_line_per_worker_and_starts_nothing(tmp_path, capsys):
    marker = tmp_path / "started"
    code = f"open({str(marker)!r}, 'w').close()"
    argv = ["--dry-run", "--nproc-per-node", "2", "--master-port", "29501"]

    assert main([*argv, "--", sys.executable, "-c", code]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert line.startswith(f"RANK={rank} LOCAL_RANK={rank} WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 ")
        assert "MASTER_ADDR=127.0.0.1 MASTER_PORT=29501 " in line
        assert " OMP_NUM_THREADS=" in line
        assert line.endswith(" " + shlex.join([sys.executable, "-c", code]))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nproc-per-node", "0", "--", "true"], "num_gpus=0 must be at least 1"),
        (["--nproc-per-node", "two", "--", "true"], "invalid int value: 'two'"),
        (["--master-port", "70000", "--", "true"], "master_port=70000 is outside 1..65535"),
        (["--nproc-per-node", "1"], "no command given; put it after '--'"),
        (["--nproc-per-node", "1", "python", "x.py"], "put the worker command after '--'"),
        (["--no-such-flag", "--", "true"], "unrecognized arguments: --no-such-flag"),
        (["--preemption-signals", "SIGTERM,SIGKILL", "--", "true"], "SIGKILL cannot be caught"),
        (["--preemption-signals", "SIGUSR3", "--", "true"], "'SIGUSR3' is not a signal"),
        (["--preemption-grace-period", "-1", "--", "true"], "grace_period=-1.0 must be"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("neox-launch: error: ")
    assert message in line


def test_debug_adds_the_traceback(capsys):
    assert main(["--debug", "--nproc-per-node", "0", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.splitlines()[-1] == (
        "neox-launch: error: num_gpus=0 must be at least 1 (workers per node)"
    )


def test_a_missing_program_exits_1(capsys):
    assert main(["--", "/nonexistent/no-such-program"]) == 1
    assert "cannot start worker 0" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "--nproc-per-node" in capsys.readouterr().out


@pytest.mark.parametrize(("visible", "workers"), [("0,1,2", 3), ("", 1)])
def test_default_nproc_is_one_per_visible_gpu(visible, workers, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert main(["--dry-run", "--", "python", "train.py"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == workers


def test_sbatch_writes_a_script_for_the_job(tmp_path, capsys):
    script = tmp_path / "job.sh"
    argv = ["--sbatch", str(script), "--num-nodes", "2", "--num-gpus", "4", "--gpus-per-node", "4"]
    assert main([*argv, "--partition", "gpu", "--", "python", "train.py"]) == 0
    text = script.read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {directive}\n" in text
    assert "srun --nodes=2 --ntasks=8 " in text and text.endswith(" -- python train.py\n")
    assert f"submit it with: sbatch {script}" in capsys.readouterr().out


def test_write_hostfile_lists_the_slurm_jobs_nodes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    assert main(["--write-hostfile", str(tmp_path / "hosts")]) == 0
    assert (tmp_path / "hosts").read_text() == "gpu01 slots=8\ngpu02 slots=8\n"


def test_dry_run_with_a_hostfile_and_a_scheduler(tmp_path, capsys):
    (tmp_path / "hosts").write_text("node1 slots=2\nnode2 slots=2\n")
    argv = ["--dry-run", "--launcher", "mpich", "--hostfile", str(tmp_path / "hosts")]
    assert main([*argv, "--", "python", "train.py"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("mpirun -np 4 -ppn 2 -hosts node1,node2 ")


def test_a_bad_hostfile_is_refused_with_its_line(tmp_path, capsys):
    (tmp_path / "hosts").write_text("node1 slots=2\nnode2 slots=\n")
    assert main(["--hostfile", str(tmp_path / "hosts"), "--", "true"]) == 2
    assert f"{tmp_path / 'hosts'}:2: slots must be a positive integer" in capsys.readouterr().err


def test_a_missing_launcher_program_exits_1_naming_the_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["--launcher", "slurm", "--num-gpus", "2", "--", "true"]) == 1
    assert "install the Debian package slurm-client" in capsys.readouterr().err
