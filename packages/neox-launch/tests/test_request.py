"""plan: a launch request (config keys / flags) resolved against the machine into a spec."""

from dataclasses import replace

import pytest

from neox_launch import LaunchRequest, Node, SlurmOptions, plan


def _hostfile(machine, text):
    path = f"{machine.cwd}/hostfile"
    with open(path, "w") as stream:
        stream.write(text)
    return path


def test_without_a_hostfile_the_default_launcher_runs_locally_on_every_gpu(machine):
    spec = plan(LaunchRequest(), machine)
    assert (spec.launcher, spec.num_nodes, spec.nproc_per_node, spec.nodes) == ("local", 1, 4, ())


def test_a_hostfile_gives_pdsh_its_nodes(machine):
    hostfile = _hostfile(machine, "node1 slots=4\nnode2 slots=4\nnode3 slots=4\n")
    spec = plan(LaunchRequest(hostfile=hostfile, num_nodes=2, num_gpus=2), machine)
    assert spec.launcher == "pdsh"
    assert spec.nodes == (Node("node1", (0, 1)), Node("node2", (0, 1)))
    assert (spec.world_size, spec.rendezvous_addr) == (4, "node1")


def test_the_hostfile_variable_is_read(machine):
    hostfile = _hostfile(machine, "nodeA slots=2\n")
    environ = {**machine.environ, "DLTS_HOSTFILE": hostfile}
    spec = plan(LaunchRequest(launcher="openmpi"), replace(machine, environ=environ))
    assert spec.hosts == ("nodeA",)


def test_include_without_a_hostfile_picks_local_devices(machine):
    spec = plan(LaunchRequest(include="localhost:1,3"), machine)
    assert (spec.launcher, spec.nproc_per_node, spec.visible_devices(0)) == ("local", 2, "1,3")


@pytest.mark.parametrize(
    ("request_", "launcher"),
    [
        (LaunchRequest(deepspeed_slurm=True), "slurm"),
        (LaunchRequest(deepspeed_mpi=True), "openmpi"),
        (LaunchRequest(deepspeed_mpi=True, launcher="mpich"), "mpich"),
        (LaunchRequest(deepspeed_mpi=True, launcher="jsrun"), "jsrun"),
    ],
)
def test_scheduler_ranks_pick_the_launcher(request_, launcher, machine):
    assert plan(request_, machine).launcher == launcher


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (LaunchRequest(deepspeed_slurm=True, launcher="openmpi"), "set launcher to slurm"),
        (LaunchRequest(deepspeed_mpi=True, launcher="local"), "deepspeed_mpi takes the ranks"),
        (LaunchRequest(deepspeed_mpi=True, deepspeed_slurm=True), "set one of them"),
        (LaunchRequest(launcher="mpi"), "launcher='mpi' is not one of"),
        (LaunchRequest(launcher="slurm", include="n1"), "need a hostfile with launcher 'slurm'"),
        (LaunchRequest(launcher="openmpi", slurm=SlurmOptions(account="a")), "slurm launcher only"),
    ],
)
def test_contradictions_are_refused(request_, message, machine):
    with pytest.raises(ValueError, match=message):
        plan(request_, machine)


def test_inconsistent_num_gpus_and_slots_are_refused_before_anything_starts(machine):
    hostfile = _hostfile(machine, "node1 slots=2\n")
    with pytest.raises(ValueError, match="num_gpus=4 workers per node, but node1 has 2"):
        plan(LaunchRequest(hostfile=hostfile, num_gpus=4), machine)


def test_a_local_launch_cannot_span_several_hosts(machine):
    hostfile = _hostfile(machine, "node1 slots=2\nnode2 slots=2\n")
    with pytest.raises(ValueError, match="num_nodes=2 with launcher='local'"):
        plan(LaunchRequest(hostfile=hostfile, launcher="local"), machine)


def test_slurm_without_a_hostfile_takes_the_jobs_node_count(machine):
    environ = {**machine.environ, "SLURM_JOB_NUM_NODES": "3"}
    spec = plan(
        LaunchRequest(launcher="slurm", num_gpus=8),
        replace(machine, environ=environ),
    )
    assert (spec.num_nodes, spec.world_size, spec.rendezvous_addr) == (3, 24, None)


def test_env_files_launcher_args_and_slurm_options_reach_the_spec(machine):
    with open(f"{machine.home}/.deepspeed_env", "w") as stream:
        stream.write("# site settings\nNCCL_IB_HCA=mlx5\nA=home\n")
    with open(f"{machine.cwd}/.deepspeed_env", "w") as stream:
        stream.write("A=run\n")
    spec = plan(
        LaunchRequest(
            launcher="slurm",
            launcher_args="--exclusive --time '1:00:00'",
            slurm=SlurmOptions(partition="gpu"),
            env={"B": "flag"},
        ),
        machine,
    )
    assert dict(spec.env) == {"NCCL_IB_HCA": "mlx5", "A": "run", "B": "flag"}
    assert spec.launcher_args == ("--exclusive", "--time", "1:00:00")
    assert spec.slurm.flags() == ["--partition=gpu"]


def test_a_malformed_env_file_names_its_line(machine):
    with open(f"{machine.cwd}/.deepspeed_env", "w") as stream:
        stream.write("A=1\nexport B\n")
    with pytest.raises(ValueError, match=r"\.deepspeed_env:2: expected 'NAME=VALUE'"):
        plan(LaunchRequest(), machine)
