"""DeepSpeed's internals are reached from one module, for the DeepSpeed releases it was tested
with, and a run refuses any other release in one line."""

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import neox_train
from neox_train import ConfigError
from neox_train.engine import deepspeed_internals
from neox_train.engine.deepspeed_internals import TESTED_RANGE, check_version

PACKAGE = Path(neox_train.__file__).parent
PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
# private names of DeepSpeed's engine and optimizer wrappers that neox relies on
PRIVATE = re.compile(r"\._(get_ckpt_name|get_zero_ckpt_name|zero3_consolidated|hp_|lazy_init_hp)")


def test_the_installed_deepspeed_is_in_the_tested_range():
    check_version()  # raises if CI installed another release than pyproject.toml allows


@pytest.mark.parametrize("version", ["0.19.0", "0.19.8", "0.19.8+cpu", "0.19.12rc1"])
def test_releases_in_the_range_are_accepted(version):
    check_version(version)


@pytest.mark.parametrize("version", ["0.18.9", "0.20.0", "1.0.0", "0.2", "unknown"])
def test_releases_outside_the_range_are_refused_naming_both(version):
    with pytest.raises(ConfigError) as err:
        check_version(version)
    message = str(err.value)
    assert "\n" not in message
    assert f"DeepSpeed {version} is installed" in message
    assert f'"deepspeed{TESTED_RANGE}"' in message


def test_a_missing_deepspeed_says_what_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(deepspeed_internals.metadata, "version", missing)
    with pytest.raises(ConfigError, match="DeepSpeed is not installed: pip install"):
        check_version()


def test_pyproject_pins_deepspeed_to_the_tested_range():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert f"deepspeed{TESTED_RANGE}" in dependencies


def test_no_other_module_reaches_into_deepspeed_internals():
    home = Path(deepspeed_internals.__file__)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and PRIVATE.match(f".{node.attr}"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
    assert PRIVATE.search(home.read_text())  # the pattern does match the real uses
