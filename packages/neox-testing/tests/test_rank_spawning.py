"""Ports and ranks: what the packages' distributed tests stand on."""

import json
import re
import socket
import subprocess
import sys

import pytest

from neox_testing import free_port, spawn_ranks, start_ranks

REPORT = "import json, os; print(json.dumps({k: os.environ[k] for k in ('RANK', 'MASTER_PORT')}))"


def test_a_free_port_can_be_bound():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_started_ranks_get_a_launchers_variables():
    procs = start_ranks([sys.executable, "-c", REPORT], 3, stdout=subprocess.PIPE)
    reports = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert [r["RANK"] for r in reports] == ["0", "1", "2"]
    assert len({r["MASTER_PORT"] for r in reports}) == 1


def all_reduce_a_temporary(rank, port, out):
    """The shape of a test's worker: a group, a collective on a tensor Python drops at once (the
    gloo thread that ran it may hold the last reference), and a return straight after."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    KEPT.append(dist.new_group([0, 1]))  # held past the worker, as a compiled model holds it
    dist.all_reduce(torch.ones(1 << 16), group=KEPT[-1])
    with open(f"{out}/rank{rank}", "w") as stream:
        stream.write("done")
    print(f"rank {rank} done")  # buffered: the rank's end flushes it


KEPT = []


def test_a_rank_ends_cleanly_when_its_group_outlives_the_worker(tmp_path, capfd):
    pytest.importorskip("torch")
    spawn_ranks(all_reduce_a_temporary, 2, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
    # Both ranks write to the one captured stream: under PYTHONUNBUFFERED a print is two writes
    # (text, then newline) and the ranks' writes may interleave, so the lines are not compared.
    out = capfd.readouterr().out
    assert sorted(re.findall(r"rank \d done", out)) == ["rank 0 done", "rank 1 done"]


def raise_on_rank_1(rank, port):
    if rank == 1:
        raise ValueError("rank 1 failed")


def test_a_rank_that_raises_fails_the_call_with_its_error():
    mp = pytest.importorskip("torch.multiprocessing")
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 failed"):
        spawn_ranks(raise_on_rank_1, 2)
