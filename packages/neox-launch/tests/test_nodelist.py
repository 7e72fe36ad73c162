"""Slurm node lists expand like Slurm's hostlist, and become a hostfile of the job's nodes."""

import pytest

from neox_launch import Host, expand_nodelist, slurm_hosts


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu[08-10,15],login1", ["gpu08", "gpu09", "gpu10", "gpu15", "login1"]),
        ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
        ("a,b[3],c", ["a", "b3", "c"]),
    ],
)
def test_expansion(expression, names):
    assert expand_nodelist(expression) == names


@pytest.mark.parametrize(
    ("expression", "message"),
    [("node[1-3", "unbalanced bracket"), ("node[3-1]", "runs backwards"), ("n[a]", "not a number")],
)
def test_bad_node_lists_are_refused(expression, message):
    with pytest.raises(ValueError, match=message):
        expand_nodelist(expression)


def test_the_jobs_hosts_take_slots_from_the_gpus_then_the_tasks():
    environ = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NTASKS_PER_NODE": "4(x2)"}
    assert slurm_hosts(environ) == (Host("n1", 4), Host("n2", 4))
    assert slurm_hosts({**environ, "SLURM_GPUS_ON_NODE": "8"})[0].slots == 8
    assert slurm_hosts(environ, slots=2)[1] == Host("n2", 2)


def test_outside_a_job_or_without_a_slot_count_is_an_error():
    with pytest.raises(ValueError, match="run this inside a Slurm job"):
        slurm_hosts({})
    with pytest.raises(ValueError, match="give the slots explicitly"):
        slurm_hosts({"SLURM_JOB_NODELIST": "n1"})
