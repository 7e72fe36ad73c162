"""containers/docker: the Dockerfile and docker-compose.yml parse, and name only files and
packages of this repository (no Docker engine runs here, so nothing is built)."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "containers" / "docker"
INSTRUCTIONS = {"ARG", "FROM", "ENV", "RUN", "COPY", "USER", "WORKDIR", "VOLUME", "CMD", "LABEL"}


def _instructions():
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    logical, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in logical]


@pytest.fixture(scope="module")
def dockerfile():
    return _instructions()


def _all(dockerfile, name):
    return [arguments for instruction, arguments in dockerfile if instruction == name]


def _env(dockerfile):
    values = {}
    for arguments in _all(dockerfile, "ENV"):
        for item in shlex.split(arguments):
            key, _, value = item.partition("=")
            values[key] = value
    return values


def test_every_line_is_a_known_instruction_on_a_cuda_pytorch_base(dockerfile):
    assert {instruction for instruction, _ in dockerfile} <= INSTRUCTIONS
    (base,) = _all(dockerfile, "FROM")
    arg = dict(item.split("=", 1) for item in _all(dockerfile, "ARG"))
    image = arg.get(base.strip("${}"), base)
    assert image.startswith("pytorch/pytorch:") and "cuda" in image


def test_copies_name_files_of_the_repository(dockerfile):
    sources = [shlex.split(arguments)[:-1] for arguments in _all(dockerfile, "COPY")]
    assert sources
    for names in sources:
        for name in names:
            assert (ROOT / name).exists(), f"COPY {name}: not in the repository"


def test_every_package_of_the_repository_is_installed(dockerfile):
    installed = {
        match
        for arguments in _all(dockerfile, "RUN")
        for match in re.findall(r"/opt/neox/packages/([\w-]+)", arguments)
        if "pip install" in arguments
    }
    packages = {path.parent.name for path in (ROOT / "packages").glob("*/pyproject.toml")}
    packages.discard("neox-testing")  # the tests' helpers, installed by the [test] extras only
    assert installed == packages


def test_data_and_checkpoints_are_volumes_owned_by_a_user_that_is_not_root(dockerfile):
    env = _env(dockerfile)
    volumes = json.loads(_all(dockerfile, "VOLUME")[-1])
    assert sorted(volumes) == sorted([env["NEOX_DATA_PATH"], env["NEOX_CHECKPOINT_PATH"]])
    (user,) = _all(dockerfile, "USER")
    assert user not in ("root", "0") and any(
        "useradd" in r and user in r for r in _all(dockerfile, "RUN")
    )
    assert json.loads(_all(dockerfile, "CMD")[-1])[0] == "neox"


def _mount(volume):
    """(source, target) of a compose volume 'SOURCE:TARGET[:ro]'; SOURCE may hold ${X:-y}."""
    for mode in (":ro", ":rw"):
        volume = volume.removesuffix(mode)
    source, _, target = volume.rpartition(":")
    return source, target


def test_compose_builds_this_dockerfile_and_mounts_the_volumes(dockerfile):
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    context = (DOCKER / service["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    env = _env(dockerfile)
    mounts = [_mount(volume) for volume in service["volumes"]]
    targets = {target for _, target in mounts}
    assert {env["NEOX_DATA_PATH"], env["NEOX_CHECKPOINT_PATH"]} <= targets
    for key in ("NEOX_DATA_PATH", "NEOX_CHECKPOINT_PATH"):
        assert service["environment"][key] == env[key]
    for source, _ in mounts:
        if source.startswith(".") and "${" not in source:
            assert (DOCKER / source).resolve().exists(), f"volume {source}: not in the repo"
