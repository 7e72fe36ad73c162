"""The launch keys of a run config (neox-train's `LaunchConfig`) and what neox-launch takes (its
launcher names, `LaunchRequest`) are one list: neither package imports the other, so the meta
package that joins them holds them to it."""

import dataclasses
import typing

from neox.train_command import launch_request
from neox_launch import LAUNCHERS, LaunchRequest
from neox_launch.request import REQUEST_KEYS, SLURM_KEYS
from neox_train.config.sections import LaunchConfig, Launcher


def test_the_config_accepts_exactly_neox_launchs_launchers():
    assert typing.get_args(Launcher) == LAUNCHERS


def test_every_key_the_request_reads_is_a_launch_key_of_the_config():
    keys = {f.name for f in dataclasses.fields(LaunchConfig)}
    assert set(REQUEST_KEYS) | set(SLURM_KEYS) <= keys
    assert REQUEST_KEYS and SLURM_KEYS


def test_the_config_defaults_are_the_requests():
    assert launch_request(LaunchConfig()) == LaunchRequest()


def test_every_launch_key_reaches_the_request():
    config = LaunchConfig(
        num_gpus=2,
        num_nodes=3,
        launcher="slurm",
        hostfile="hosts",
        master_port=2345,
        deepspeed_slurm=True,
        include="n1@n2",
        exclude="n3",
        master_addr="n1",
        launcher_args="--mpi=pmix",
        no_ssh_check=True,
        comment="c",
        account="a",
        partition="p",
        preemption_grace_period=30.0,
        preemption_signals=("SIGUSR1",),
    )
    request = launch_request(config)
    for name in REQUEST_KEYS:
        assert getattr(request, name) == getattr(config, name), name
    assert (request.slurm.comment, request.slurm.account, request.slurm.partition) == (
        "c",
        "a",
        "p",
    )
    assert request.preemption.grace_period == 30.0
    assert request.preemption.signals == config.signals
