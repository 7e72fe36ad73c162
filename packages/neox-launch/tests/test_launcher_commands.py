"""Golden command lines: what each runner starts for a two-node job (and the dry-run text)."""

import shlex
import signal
from dataclasses import replace

import pytest

from neox_launch import LaunchSpec, Node, SlurmOptions, describe, sbatch_script
from neox_launch.preemption import PreemptionPolicy, parse_signals
from neox_launch.runner import launcher_commands

NODES = (Node("node1", (0, 1)), Node("node2", (0, 1)))
COMMAND = ["python", "train.py", "my run.yml"]
SHIM = "/venv/bin/python -m neox_launch.rendezvous --scheduler {} --nproc-per-node 2"
TAIL = "-- python train.py 'my run.yml'"


def _spec(launcher, **overrides):
    values = dict(
        nproc_per_node=2,
        num_nodes=2,
        launcher=launcher,
        nodes=NODES,
        master_port=29600,
        env={"NEOX_TAG": "a b"},
        launcher_args=("--extra",),
    )
    return LaunchSpec(**{**values, **overrides})


def _line(spec, machine):
    (command,) = launcher_commands(spec, COMMAND, machine)
    return shlex.join(command.argv)


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        (
            "openmpi",
            "mpirun -np 4 -host node1:2,node2:2 --bind-to none -x NCCL_DEBUG -x PATH "
            f"-x PYTHONPATH -x NEOX_TAG --extra {SHIM.format('openmpi')} "
            f"--master-addr node1 --master-port 29600 {TAIL}",
        ),
        *(
            (
                hydra,
                "mpirun -np 4 -ppn 2 -hosts node1,node2 -genvlist NCCL_DEBUG,PATH,PYTHONPATH,"
                f"NEOX_TAG --extra {SHIM.format(hydra)} --master-addr node1 --master-port 29600 "
                f"{TAIL}",
            )
            for hydra in ("mpich", "mvapich", "impi")
        ),
        (
            "slurm",
            "srun --nodes=2 --ntasks=4 --ntasks-per-node=2 --kill-on-bad-exit=1 "
            f"--quit-on-interrupt --nodelist=node1,node2 --extra {SHIM.format('slurm')} "
            f"--master-port 29600 {TAIL}",
        ),
        (
            "jsrun",
            "jsrun --nrs=4 --rs_per_host=2 --tasks_per_rs=1 --gpu_per_rs=1 --bind=none --extra "
            f"{SHIM.format('jsrun')} --master-addr node1 --master-port 29600 {TAIL}",
        ),
    ],
)
def test_scheduler_launchers(launcher, expected, machine):
    spec = _spec(launcher)
    assert _line(spec, machine) == expected
    (command,) = launcher_commands(spec, COMMAND, machine)
    assert command.env["NEOX_TAG"] == "a b" and command.env["TERM"] == "xterm"


def test_openmpi_as_root_inside_an_allocation(machine):
    spec = _spec("openmpi", nodes=(), env={}, launcher_args=(), master_port=None)
    assert _line(spec, replace(machine, is_root=True)) == (
        "mpirun -np 4 --allow-run-as-root --map-by ppr:2:node --bind-to none -x NCCL_DEBUG "
        f"-x PATH -x PYTHONPATH {SHIM.format('openmpi')} {TAIL}"
    )


def test_slurm_options_pass_through(machine):
    spec = _spec("slurm", nodes=(), slurm=SlurmOptions(comment="c d", account="acc"))
    (command,) = launcher_commands(spec, COMMAND, machine)
    assert command.argv[6:9] == ("--comment=c d", "--account=acc", "--extra")


def test_torchrun_sets_the_devices_and_threads_of_this_machine(machine):
    spec = LaunchSpec(
        nproc_per_node=2, launcher="torchrun", nodes=(Node("localhost", (1, 3)),), master_port=29600
    )
    (command,) = launcher_commands(spec, COMMAND, machine)
    assert shlex.join(command.argv) == (
        "torchrun --nnodes=1 --nproc-per-node=2 --master-addr=127.0.0.1 --master-port=29600 "
        "--no-python python train.py 'my run.yml'"
    )
    assert (command.env["CUDA_VISIBLE_DEVICES"], command.env["OMP_NUM_THREADS"]) == ("1,3", "4")


def test_pdsh_runs_the_agent_on_each_node_with_the_environment(machine):
    policy = PreemptionPolicy(grace_period=90, signals=(signal.SIGUSR1, signal.SIGTERM))
    spec = _spec("pdsh", nodes=(Node("node1", (0, 1)), Node("node2", (2, 3))), preemption=policy)
    commands = launcher_commands(spec, COMMAND, machine)
    assert [command.argv[:-1] for command in commands] == [
        ("pdsh", "-S", "-w", "node1", "--extra"),
        ("pdsh", "-S", "-w", "node2", "--extra"),
    ]
    assert commands[0].env["PDSH_RCMD_TYPE"] == "ssh"
    remote = shlex.split(commands[1].argv[-1])
    cut = remote.index("exec")
    assert " ".join(remote[:cut]) == (
        f"cd {machine.cwd} && export NCCL_DEBUG=WARN PATH=/venv/bin:/usr/bin PYTHONPATH=/src "
        "NEOX_TAG=a b &&"
    )
    assert remote[cut + 1 :] == [
        "/venv/bin/python",
        "-m",
        "neox_launch.agent",
        "--node-rank=1",
        "--num-nodes=2",
        "--nproc-per-node=2",
        "--master-addr=node1",
        "--master-port=29600",
        "--watch-stdin",
        "--preemption-grace-period=90",
        "--preemption-signals=SIGUSR1,SIGTERM",
        "--visible-devices=2,3",
        "--",
        *COMMAND,
    ]


@pytest.mark.parametrize(
    ("launcher", "signals", "sent"),
    [
        # srun and Open MPI's mpirun kill their ranks on SIGTERM/SIGINT, but pass SIGUSR1/2 on;
        # Hydra passes SIGTERM on itself
        ("slurm", "SIGTERM,SIGINT,SIGUSR1,SIGUSR2", signal.SIGUSR1),
        ("openmpi", "SIGTERM,SIGUSR2", signal.SIGUSR2),
        ("slurm", "SIGTERM", signal.SIGTERM),  # no user signal to use: the one received
        ("mpich", "SIGTERM,SIGUSR1", signal.SIGTERM),
    ],
)
def test_a_preemption_signal_reaches_the_ranks_through_the_scheduler(
    launcher, signals, sent, machine
):
    policy = PreemptionPolicy(signals=parse_signals(signals))
    nodes = () if launcher == "slurm" else NODES
    (command,) = launcher_commands(
        _spec(launcher, nodes=nodes, preemption=policy), COMMAND, machine
    )
    assert command.signal_for(signal.SIGTERM, preempting=True) == sent
    assert command.signal_for(signal.SIGTERM) == signal.SIGTERM  # a failure stops it as before


def test_dry_run_lines_show_what_the_launcher_adds(machine):
    (line,) = describe(_spec("slurm"), COMMAND, machine)
    assert line.startswith("NEOX_TAG='a b' srun --nodes=2 ")
    assert "PATH=" not in line  # inherited unchanged, so not shown


def test_picking_devices_needs_a_launcher_that_can(machine):
    with pytest.raises(ValueError, match="node2 uses devices 2,3: picking device numbers works"):
        _spec("openmpi", nodes=(Node("node1", (0, 1)), Node("node2", (2, 3))))


def test_the_sbatch_script_allocates_the_job_and_runs_srun(machine):
    spec = _spec("slurm", nodes=(), env={}, launcher_args=(), master_port=None)
    spec = replace(spec, nproc_per_node=4, slurm=SlurmOptions(comment="nightly run", account="a"))
    script = sbatch_script(spec, COMMAND, machine, gpus_per_node=4)
    assert script == "\n".join(
        [
            "#!/bin/bash",
            "# Written by neox-launch: 2 node(s) x 4 task(s).",
            "#SBATCH --job-name=neox",
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=4",
            "#SBATCH --gpus-per-node=4",
            '#SBATCH --comment="nightly run"',
            "#SBATCH --account=a",
            "set -euo pipefail",
            f"cd {machine.cwd}",
            "export NCCL_DEBUG=WARN",
            "export PATH=/venv/bin:/usr/bin",
            "export PYTHONPATH=/src",
            "exec srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --kill-on-bad-exit=1 "
            "--quit-on-interrupt /venv/bin/python -m neox_launch.rendezvous --scheduler slurm "
            f"--nproc-per-node 4 {TAIL}",
            "",
        ]
    )


def test_an_sbatch_directive_cannot_hold_a_double_quote(machine):
    spec = _spec("slurm", slurm=SlurmOptions(comment='say "hi"'))
    with pytest.raises(ValueError, match="sbatch directives cannot hold"):
        sbatch_script(spec, COMMAND, machine)
