"""Finding launcher programs: the right MPI among several, and what to install when missing."""

import pytest

from neox_launch import ProgramNotFoundError
from neox_launch.program import find_program


def _fake(directory, name, version_text):
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_text}'\n")
    path.chmod(0o755)
    return str(path)


def test_the_implementation_asked_for_is_found_among_several(tmp_path):
    _fake(tmp_path, "mpirun", "mpirun (Open MPI) 4.1.4")
    mpich = _fake(tmp_path, "mpirun.mpich", "HYDRA build details:")
    assert find_program("openmpi", {"PATH": str(tmp_path)}) == str(tmp_path / "mpirun")
    assert find_program("mpich", {"PATH": str(tmp_path)}) == mpich


@pytest.mark.parametrize(
    ("launcher", "package"),
    [
        ("openmpi", "the Debian package openmpi-bin"),
        ("mpich", "the Debian package mpich"),
        ("pdsh", "the Debian package pdsh"),
        ("slurm", "the Debian package slurm-client"),
        ("mvapich", "MVAPICH2"),
        ("impi", "Intel MPI"),
        ("jsrun", "IBM Spectrum LSF"),
        ("torchrun", "pip install torch"),
    ],
)
def test_a_missing_program_names_what_to_install(launcher, package, tmp_path):
    with pytest.raises(ProgramNotFoundError, match="not on PATH") as error:
        find_program(launcher, {"PATH": str(tmp_path)})
    assert package in str(error.value)


def test_the_wrong_implementation_is_refused(tmp_path):
    _fake(tmp_path, "mpirun", "mpirun (Open MPI) 4.1.4")
    with pytest.raises(ProgramNotFoundError, match="Intel\\(R\\) MPI"):
        find_program("impi", {"PATH": str(tmp_path)})


def test_a_program_beside_the_python_is_found(tmp_path):
    (tmp_path / "venv").mkdir()
    torchrun = _fake(tmp_path / "venv", "torchrun", "")
    found = find_program("torchrun", {"PATH": str(tmp_path)}, str(tmp_path / "venv" / "python"))
    assert found == torchrun
