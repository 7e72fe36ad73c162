import subprocess
import sys

import pytest

from neox.cli import COMMANDS, main
from neox.train_command import launch_spec
from neox_train import ConfigError
from neox_train.run_config import LaunchConfig


def test_every_command_dispatches_to_a_cli(capsys):
    for name in ("data", "convert", "launch", "check", "generate", "train", "demo"):
        try:
            code = COMMANDS[name](["--help"])
        except SystemExit as exit_info:  # argparse exits after printing help
            code = exit_info.code
        assert code == 0, name
        assert "usage:" in capsys.readouterr().out


def test_unknown_command_and_no_command(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main([]) == 2


def test_the_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "neox", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "neox train CONFIG" in out.stdout


def test_launch_spec_from_the_launch_keys():
    spec = launch_spec(LaunchConfig(num_gpus=3, master_port=29511))
    assert (spec.nproc_per_node, spec.world_size, spec.master_port) == (3, 3, 29511)
    with pytest.raises(ConfigError, match="multi-node launch is not supported yet"):
        launch_spec(LaunchConfig(num_gpus=2, num_nodes=2))
    with pytest.raises(ConfigError, match="launcher 'slurm' is not supported yet"):
        launch_spec(LaunchConfig(launcher="slurm"))
