"""The node agent the pdsh runner starts on each node: global ranks, failures, a closed link."""

import json
import subprocess
import sys

AGENT = [sys.executable, "-m", "neox_launch.agent"]
LAYOUT = ["--node-rank=1", "--num-nodes=2", "--nproc-per-node=2"]
MASTER = ["--master-addr=node0", "--master-port=29611"]


def test_workers_get_global_ranks_and_the_devices(source_env, worker_argv, tmp_path):
    body = """
names = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "CUDA_VISIBLE_DEVICES"]
mark(f"rank{rank}.json", json.dumps([os.environ.get(name) for name in names]))
"""
    argv = [
        *AGENT,
        *LAYOUT,
        *MASTER,
        "--visible-devices=2,3",
        "--",
        *worker_argv("import json\n" + body),
    ]
    assert subprocess.run(argv, env=source_env, timeout=60).returncode == 0
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (2, 3)]
    assert reports == [["2", "0", "4", "node0", "2,3"], ["3", "1", "4", "node0", "2,3"]]


def test_the_end_of_stdin_stops_the_workers(source_env, worker_argv, read_file_text, gone):
    body = 'mark(f"pid{rank}", str(os.getpid()))\ntime.sleep(60)\n'
    argv = [*AGENT, *LAYOUT, *MASTER, "--watch-stdin", "--", *worker_argv(body)]
    agent = subprocess.Popen(argv, env=source_env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pids = [int(read_file_text(f"pid{rank}")) for rank in (2, 3)]
        agent.stdin.close()
        agent.wait(timeout=30)
        err = agent.stderr.read()
    finally:
        agent.kill()
    assert agent.returncode == 129  # 128 + SIGHUP: the launcher went away
    assert b"stdin ended" in err
    assert all(gone(pid) for pid in pids)


def test_a_failing_worker_is_named_by_its_global_rank(source_env, worker_argv):
    argv = [*AGENT, *LAYOUT, *MASTER, "--", *worker_argv("sys.exit(4 if rank == 3 else 0)\n")]
    result = subprocess.run(argv, env=source_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert "worker 3 (pid" in result.stderr and "exited with code 4" in result.stderr
