"""neox-launch: start neox workers on one or many nodes (standard library + pyyaml, no torch)."""

from neox_launch.devices import count_local_gpus
from neox_launch.hostfile import (
    Host,
    HostfileError,
    find_hostfile,
    format_hostfile,
    parse_hostfile,
    read_hostfile,
)
from neox_launch.local import worker_commands
from neox_launch.machine import Machine
from neox_launch.nodelist import expand_nodelist, slurm_hosts
from neox_launch.preemption import PEER_LOST, PREEMPTED, PreemptionPolicy, parse_signals
from neox_launch.program import ProgramNotFoundError
from neox_launch.request import LaunchRequest, plan
from neox_launch.resources import Node, parse_filter, select_nodes
from neox_launch.runner import describe, launch
from neox_launch.slurm import sbatch_script
from neox_launch.spec import LAUNCHERS, LaunchSpec, SlurmOptions
from neox_launch.supervisor import WorkerStartError
from neox_launch.worker import WorkerCommand

__all__ = [
    "LAUNCHERS",
    "PEER_LOST",
    "PREEMPTED",
    "Host",
    "HostfileError",
    "LaunchRequest",
    "LaunchSpec",
    "Machine",
    "Node",
    "PreemptionPolicy",
    "ProgramNotFoundError",
    "SlurmOptions",
    "WorkerCommand",
    "WorkerStartError",
    "count_local_gpus",
    "describe",
    "expand_nodelist",
    "find_hostfile",
    "format_hostfile",
    "launch",
    "parse_filter",
    "parse_hostfile",
    "parse_signals",
    "plan",
    "read_hostfile",
    "sbatch_script",
    "select_nodes",
    "slurm_hosts",
    "worker_commands",
]
