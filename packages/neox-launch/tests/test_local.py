"""The local runner: what each worker gets, and how a group of real workers ends."""

import json
import logging
import signal
import time

import pytest

from neox_launch import PEER_LOST, LaunchSpec, PreemptionPolicy, worker_commands
from neox_launch.local import run_local
from neox_launch.supervisor import WorkerStartError

REPORT_ENV = """
import json
names = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
         "OMP_NUM_THREADS", "NEOX_TEST"]
print(f"hello from rank {rank}", flush=True)
mark(f"rank{rank}.json", json.dumps({name: os.environ.get(name) for name in names}))
"""


def test_each_worker_gets_its_rank_and_the_shared_rendezvous():
    spec = LaunchSpec(nproc_per_node=3, master_addr="10.0.0.1")
    commands = worker_commands(
        spec, ["python", "train.py"], master_port=29500, base_env={"PATH": "/bin"}, cpu_count=8
    )
    assert [command.rank for command in commands] == [0, 1, 2]
    for rank, command in enumerate(commands):
        assert command.argv == ("python", "train.py")
        assert {name: command.env[name] for name in ("RANK", "LOCAL_RANK")} == {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        assert command.env["WORLD_SIZE"] == command.env["LOCAL_WORLD_SIZE"] == "3"
        assert command.env["MASTER_ADDR"] == "10.0.0.1"
        assert command.env["MASTER_PORT"] == "29500"
        assert command.env["OMP_NUM_THREADS"] == "2"  # 8 cpus // 3 workers
        assert command.env["PATH"] == "/bin"


@pytest.mark.parametrize(
    ("base_env", "extra_env", "cpu_count", "expected"),
    [
        ({}, {}, 1, "1"),  # never below one thread
        ({"OMP_NUM_THREADS": "7"}, {}, 64, "7"),  # the user's setting wins
        ({"OMP_NUM_THREADS": "7"}, {"OMP_NUM_THREADS": "3"}, 64, "3"),  # spec.env over base_env
    ],
)
def test_omp_threads_default_only_when_unset(base_env, extra_env, cpu_count, expected):
    spec = LaunchSpec(nproc_per_node=4, env=extra_env)
    commands = worker_commands(
        spec, ["true"], master_port=1234, base_env=base_env, cpu_count=cpu_count
    )
    assert {command.env["OMP_NUM_THREADS"] for command in commands} == {expected}


def test_worker_environment_is_read_only():
    (command,) = worker_commands(
        LaunchSpec(nproc_per_node=1), ["true"], master_port=1234, base_env={}
    )
    with pytest.raises(TypeError):
        command.env["RANK"] = "5"  # type: ignore[index]


@pytest.mark.parametrize("command", [[], [""]])
def test_empty_command_is_rejected(command):
    with pytest.raises(ValueError, match="worker command is empty"):
        worker_commands(LaunchSpec(nproc_per_node=1), command, master_port=1234, base_env={})


def test_two_workers_run_with_their_ranks(worker_argv, tmp_path, capfd):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    spec = LaunchSpec(nproc_per_node=2, env={"NEOX_TEST": "yes"})
    argv = worker_argv(REPORT_ENV)

    assert run_local(spec, argv) == 0

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["RANK"] for report in reports] == ["0", "1"]
    assert [report["LOCAL_RANK"] for report in reports] == ["0", "1"]
    assert {report["WORLD_SIZE"] for report in reports} == {"2"}
    assert {report["LOCAL_WORLD_SIZE"] for report in reports} == {"2"}
    assert {report["MASTER_ADDR"] for report in reports} == {"127.0.0.1"}
    assert len({report["MASTER_PORT"] for report in reports}) == 1
    assert {report["NEOX_TEST"] for report in reports} == {"yes"}
    out = capfd.readouterr().out  # the workers write straight to the launcher's stdout
    assert "hello from rank 0" in out and "hello from rank 1" in out
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a_failing_worker_stops_the_others(worker_argv, read_file_text, gone, caplog):
    body = """
if rank == 0:
    mark("pid0", str(os.getpid()))
    time.sleep(60)
else:
    wait_for("pid0")
    sys.exit(3)
"""
    start = time.monotonic()

    assert run_local(LaunchSpec(nproc_per_node=2), worker_argv(body)) == 3

    assert time.monotonic() - start < 30  # did not wait for the sleeping worker
    assert gone(int(read_file_text("pid0")))
    assert "worker 1" in caplog.text and "exited with code 3" in caplog.text


def test_the_worker_that_failed_is_named_not_the_one_that_lost_it(worker_argv, caplog):
    # rank 0 exits first, saying it lost its peer; rank 1's own failure comes half a second later
    body = f"""
if rank == 0:
    sys.exit({PEER_LOST})
else:
    time.sleep(0.5)
    sys.exit(3)
"""
    caplog.set_level(logging.INFO, logger="neox_launch")
    assert run_local(LaunchSpec(nproc_per_node=2), worker_argv(body)) == 3

    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and failures[0].startswith("worker 1 (pid"), failures
    assert "exited with code 3; stopping the others" in failures[0]
    assert (
        "worker 0 (pid" in caplog.text and f"exited with code {PEER_LOST}: it lost" in caplog.text
    )


def test_a_lost_peer_with_no_failure_to_blame_is_reported_after_the_wait(
    worker_argv, read_file_text, gone, caplog
):
    body = f"""
if rank == 1:
    mark("pid1", str(os.getpid()))
    time.sleep(60)
else:
    wait_for("pid1")
    sys.exit({PEER_LOST})
"""
    assert run_local(LaunchSpec(nproc_per_node=2), worker_argv(body)) == PEER_LOST

    assert gone(int(read_file_text("pid1")))
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and failures[0].startswith("worker 0 (pid"), failures


def test_processes_ignoring_sigterm_are_killed_after_the_grace_period(
    worker_argv, read_file_text, gone
):
    body = """
if rank == 0:  # ignores SIGTERM itself
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark("pid0", str(os.getpid()))
    time.sleep(60)
elif rank == 1:  # ends on SIGTERM, but leaves a child that ignores it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    mark("child1", str(child.pid))
    time.sleep(60)
else:
    wait_for("pid0"), wait_for("child1")
    sys.exit(1)
"""
    spec = LaunchSpec(nproc_per_node=3, preemption=PreemptionPolicy(grace_period=0.5))

    assert run_local(spec, worker_argv(body)) == 1

    assert gone(int(read_file_text("pid0")))
    assert gone(int(read_file_text("child1")))


def test_a_worker_killed_by_a_signal_gives_128_plus_signum(worker_argv):
    body = "os.kill(os.getpid(), signal.SIGKILL) if rank == 1 else None\n"
    assert run_local(LaunchSpec(nproc_per_node=2), worker_argv(body)) == 128 + signal.SIGKILL


def test_a_missing_executable_is_reported():
    with pytest.raises(WorkerStartError, match="no-such-program"):
        run_local(LaunchSpec(nproc_per_node=1), ["/nonexistent/no-such-program"])
