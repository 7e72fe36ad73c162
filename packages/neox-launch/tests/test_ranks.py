"""Reading each scheduler's rank variables into the launch variables (pure)."""

import pytest

from neox_launch.ranks import (
    Place,
    RendezvousError,
    detect_scheduler,
    find_place,
    master_address,
    rank_env,
    slurm_tasks_on_node,
)

ENVIRONMENTS = {
    "openmpi": {
        "OMPI_COMM_WORLD_RANK": "5",
        "OMPI_COMM_WORLD_SIZE": "8",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
    },
    "mvapich": {
        "MV2_COMM_WORLD_RANK": "5",
        "MV2_COMM_WORLD_SIZE": "8",
        "MV2_COMM_WORLD_LOCAL_RANK": "1",
        "MV2_COMM_WORLD_LOCAL_SIZE": "4",
    },
    "mpich": {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4"},
    "slurm": {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
    },
    "jsrun": {
        "JSM_NAMESPACE_RANK": "5",
        "JSM_NAMESPACE_SIZE": "8",
        "JSM_NAMESPACE_LOCAL_RANK": "1",
        "JSM_NAMESPACE_LOCAL_SIZE": "4",
    },
}


@pytest.mark.parametrize("scheduler", sorted(ENVIRONMENTS))
def test_every_scheduler_is_detected_and_read(scheduler):
    environ = ENVIRONMENTS[scheduler]
    assert detect_scheduler(environ) == scheduler
    assert find_place(environ, scheduler) == Place(scheduler, 5, 8, 1, 4)


def test_mpi_inside_a_slurm_allocation_is_mpi():
    environ = {**ENVIRONMENTS["slurm"], **ENVIRONMENTS["openmpi"], "SLURM_PROCID": "0"}
    assert detect_scheduler(environ) == "openmpi"


def test_missing_local_variables_come_from_the_ranks_per_node():
    environ = {"PMI_RANK": "6", "PMI_SIZE": "8"}
    assert find_place(environ, "impi", nproc_per_node=4) == Place("impi", 6, 8, 2, 4)
    with pytest.raises(RendezvousError, match="MPI_LOCALRANKID is not set by impi"):
        find_place(environ, "impi")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no scheduler rank variable is set"),
        ({"PMI_RANK": "x", "PMI_SIZE": "2"}, "PMI_RANK='x' is not a non-negative integer"),
        (
            {"PMI_RANK": "2", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"},
            "rank 2 of 2",
        ),
    ],
)
def test_bad_variables_are_refused(environ, message):
    with pytest.raises(RendezvousError, match=message):
        find_place(environ, detect_scheduler(environ))


def test_slurm_tasks_per_node_are_expanded():
    environ = {"SLURM_STEP_TASKS_PER_NODE": "2(x2),3", "SLURM_NODEID": "2"}
    assert slurm_tasks_on_node(environ) == 3


def test_the_master_is_given_or_local_or_the_first_slurm_node():
    several_nodes, one_node = Place("slurm", 5, 8, 1, 4), Place("slurm", 1, 4, 1, 4)
    environ = {"SLURM_STEP_NODELIST": "gpu[07-08]"}
    assert master_address(several_nodes, environ, "head") == "head"
    assert master_address(one_node, environ, None) == "127.0.0.1"
    assert master_address(several_nodes, environ, None) == "gpu07"
    with pytest.raises(RendezvousError, match="pass --master-addr"):
        master_address(several_nodes, {}, None)


def test_the_launch_variables_and_a_thread_default():
    place = Place("openmpi", 5, 8, 1, 4)
    env = rank_env(place, {}, "gpu07", 29600, cpus=32)
    assert env == {
        "RANK": "5",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "29600",
        "OMP_NUM_THREADS": "8",
    }
    assert "OMP_NUM_THREADS" not in rank_env(place, {"OMP_NUM_THREADS": "2"}, "h", 1, cpus=32)
