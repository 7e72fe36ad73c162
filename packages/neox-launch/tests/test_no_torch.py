"""neox-launch installs and runs in a fresh venv holding only it and its dependencies."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, importlib.util, pkgutil, sys
assert importlib.util.find_spec("torch") is None, "torch is installed"
import neox_launch
assert "site-packages" in neox_launch.__file__, neox_launch.__file__
for module in pkgutil.walk_packages(neox_launch.__path__, "neox_launch."):
    importlib.import_module(module.name)
assert "torch" not in sys.modules
print("imported", len(list(pkgutil.walk_packages(neox_launch.__path__))), "modules")
"""


def _clean_env() -> dict[str, str]:
    """This environment without anything that would make the source tree importable."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_installs_and_runs_without_torch(tmp_path):
    # Build from a copy so the build leaves nothing (build/, *.egg-info) in the source tree.
    source = tmp_path / "neox-launch"
    shutil.copytree(
        PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, env = venv / "bin" / "python", _clean_env()
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)], check=True, env=env
    )

    checked = subprocess.run(
        [str(python), "-c", CHECK], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    helped = subprocess.run(
        [str(venv / "bin" / "neox-launch"), "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "--nproc-per-node" in helped.stdout
    launched = subprocess.run(
        [str(venv / "bin" / "neox-launch"), "--nproc-per-node", "2", "--", str(python), "-c", "0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert launched.returncode == 0, launched.stderr
