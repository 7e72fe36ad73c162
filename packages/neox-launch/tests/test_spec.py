"""LaunchSpec validation: bad values fail at construction with a message naming them."""

import pytest

from neox_launch import LaunchSpec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node=0 must be at least 1"),
        ({"nproc_per_node": 1, "num_nodes": 0}, "num_nodes=0 must be at least 1"),
        (
            {"nproc_per_node": 1, "num_nodes": 2},
            "num_nodes=2 with launcher='local'.*set num_nodes=1",
        ),
        ({"nproc_per_node": 1, "launcher": "mpi"}, "launcher='mpi' is not supported.*openmpi"),
        ({"nproc_per_node": 1, "launcher": "pdsh"}, "launcher='pdsh' needs the nodes.*hostfile"),
        ({"nproc_per_node": 1, "num_nodes": 2, "launcher": "torchrun"}, "this machine only"),
        ({"nproc_per_node": 1, "master_port": 0}, "master_port=0 is outside 1..65535"),
        ({"nproc_per_node": 1, "master_port": 65536}, "master_port=65536 is outside"),
        ({"nproc_per_node": 1, "master_addr": ""}, "master_addr='' must be a host name"),
        ({"nproc_per_node": 1, "env": {"RANK": "3"}}, "env sets RANK.*remove it"),
        ({"nproc_per_node": 1, "env": {"A=B": "1"}}, "invalid variable 'A=B'"),
    ],
)
def test_bad_values_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LaunchSpec(**kwargs)


@pytest.mark.parametrize("value", [True, 2.0, "2"])
def test_non_int_worker_counts_raise_type_error(value):
    with pytest.raises(TypeError, match="nproc_per_node must be an int"):
        LaunchSpec(nproc_per_node=value)


def test_env_is_copied_and_read_only():
    env = {"NCCL_DEBUG": "INFO"}
    spec = LaunchSpec(nproc_per_node=2, env=env)
    env["NCCL_DEBUG"] = "WARN"
    assert spec.env == {"NCCL_DEBUG": "INFO"}
    with pytest.raises(TypeError):
        spec.env["NCCL_DEBUG"] = "WARN"  # type: ignore[index]


def test_specs_are_hashable_and_compare_by_value():
    first = LaunchSpec(nproc_per_node=2, env={"A": "1"})
    second = LaunchSpec(nproc_per_node=2, env={"A": "1"})
    assert first == second and hash(first) == hash(second)
    assert first != LaunchSpec(nproc_per_node=2, env={"A": "2"})
    assert first.world_size == 2
