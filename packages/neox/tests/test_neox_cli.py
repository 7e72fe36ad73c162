import subprocess
import sys
from pathlib import Path

import pytest

from neox.cli import COMMANDS, main
from neox.train_command import check, launch_spec
from neox_train import ConfigError
from neox_train.config.sections import LaunchConfig


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


def test_launch_spec_from_the_launch_keys(monkeypatch):
    monkeypatch.delenv("DLTS_HOSTFILE", raising=False)
    spec = launch_spec(LaunchConfig(num_gpus=3, master_port=29511))
    assert (spec.launcher, spec.nproc_per_node, spec.world_size, spec.master_port) == (
        "local",
        3,
        3,
        29511,
    )
    with pytest.raises(ConfigError, match="num_nodes=2 needs a hostfile"):
        launch_spec(LaunchConfig(num_gpus=2, num_nodes=2))
    slurm = launch_spec(LaunchConfig(launcher="slurm", num_gpus=2, num_nodes=2))
    assert (slurm.launcher, slurm.world_size) == ("slurm", 4)
    assert launch_spec(LaunchConfig(num_gpus=1, deepspeed_mpi=True)).launcher == "openmpi"


def test_launch_spec_reads_the_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=4\nnode2 slots=4\n")
    spec = launch_spec(LaunchConfig(hostfile=str(hostfile), num_gpus=2))
    assert (spec.launcher, spec.hosts, spec.world_size) == ("pdsh", ("node1", "node2"), 4)
    hostfile.write_text("node1 slots=4\nnode2 four\n")
    with pytest.raises(ConfigError, match="hosts:2: expected 'HOST slots=N'"):
        launch_spec(LaunchConfig(hostfile=str(hostfile)))
    with pytest.raises(ConfigError, match="num_gpus=8 workers per node, but node1 has 4"):
        hostfile.write_text("node1 slots=4\n")
        launch_spec(LaunchConfig(hostfile=str(hostfile), num_gpus=8))


def test_a_missing_launcher_program_is_one_error_line(tmp_path, monkeypatch, capsys):
    from neox import train_command

    monkeypatch.setattr(train_command, "load_run_config", _fake_run_config)
    monkeypatch.setattr(train_command, "check_inputs", lambda run: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert train_command.main(["run.yml"]) == 1
    assert "neox train: error: launcher 'openmpi' needs mpirun" in capsys.readouterr().err


def _fake_run_config(paths):
    class Run:
        launch = LaunchConfig(launcher="openmpi", num_gpus=2)

        def batch(self, world_size):
            return None

    class Loaded:
        run = Run()

    return Loaded()


CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize(
    ("name", "world"),
    [("20B.yml", 8), ("pythia/6-9B.yml", 2), ("pythia/12B.yml", 4), ("pythia/160M.yml", 1)],
)
def test_neox_check_takes_a_big_run_at_its_smallest_layout(capsys, name, world):
    """No num_gpus and no hostfile: what `neox train` would start is not decided here, so the
    file is checked at the smallest layout it allows (pipeline x tensor x the replicas its batch
    keys fix), as `neox plan` does, instead of being refused at this machine's one device."""
    assert check([str(CONFIGS / name)]) == 0
    out = capsys.readouterr().out
    assert f"world size: {world} (the smallest layout the file allows)" in out


def test_neox_check_uses_num_gpus_when_the_file_sets_it(capsys, tmp_path):
    yml = tmp_path / "gpus.yml"
    yml.write_text("num_gpus: 2\n")
    assert check([str(CONFIGS / "20B.yml"), str(yml)]) == 2  # 2 GPUs cannot hold 4 x 2
    assert "world size 2 is not divisible" in capsys.readouterr().err
    assert check([str(CONFIGS / "pythia/160M.yml"), str(yml)]) == 0
    assert "world size: 2 (given)" in capsys.readouterr().out
