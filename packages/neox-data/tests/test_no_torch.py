"""neox-data installs and runs in a fresh virtual environment that has no torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, importlib.util, pkgutil, sys
assert importlib.util.find_spec("torch") is None, "torch is installed"
import neox_data
names = [m.name for m in pkgutil.walk_packages(neox_data.__path__, "neox_data.")]
for name in names:
    importlib.import_module(name)
assert "torch" not in sys.modules, "something imported torch"
print(neox_data.__file__)
print(" ".join(sorted(names)))
"""

MAKE_ZST_CORPUS = """
import sys, zstandard
lines = b"".join(b'{"text": "hello world number %d"}\\n' % i for i in range(50))
open(sys.argv[1], "wb").write(zstandard.ZstdCompressor().compress(lines))
"""


def run(argv: list[str | Path], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    completed = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, f"{argv} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def install_in_fresh_venv(tmp_path: Path) -> Path:
    """Install a copy of the package (with its zstd extra) into a new venv; return its bin/."""
    source = tmp_path / "neox-data"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    shutil.copytree(PACKAGE, source, ignore=ignore)  # keep build files out of the checkout
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    bin_dir = venv / "bin"
    pip = [bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, f"{source}[zstd]"], tmp_path)
    return bin_dir


@pytest.mark.slow  # creates a virtual environment and pip-installs into it (~15 s)
def test_installs_and_runs_without_torch(tmp_path: Path) -> None:
    bin_dir = install_in_fresh_venv(tmp_path)
    module_file, modules = run([bin_dir / "python", "-c", CHECK], tmp_path).splitlines()
    assert Path(module_file).is_relative_to(bin_dir.parent)
    expected = ["cli", "corpus", "gpt_dataset", "preprocess", "token_file", "tokenizer"]
    expected += ["blended_dataset", "char_tokenizer", "hf_tokenizer", "index_cache", "report"]
    expected += ["public_corpora", "spm_tokenizer", "tiktoken_tokenizer"]  # no extras needed
    for name in expected:
        assert f"neox_data.{name}" in modules.split()
    assert "preprocess" in run([bin_dir / "neox-data", "--help"], tmp_path)

    # A real run of the console script on the zstd-compressed input the extra enables.
    corpus = tmp_path / "corpus.jsonl.zst"
    run([bin_dir / "python", "-c", MAKE_ZST_CORPUS, corpus], tmp_path)
    tokenizer_json = tmp_path / "tokenizer.json"
    train = ["train-tokenizer", "--input", corpus, "--vocab-size", "270"]
    run([bin_dir / "neox-data", *train, "--output", tokenizer_json], tmp_path)
    preprocess = ["preprocess", "--input", corpus, "--vocab-file", tokenizer_json]
    out = run([bin_dir / "neox-data", *preprocess, "--output-prefix", tmp_path / "out"], tmp_path)
    assert "50 documents" in out
    assert (tmp_path / "out_text_document.idx").is_file()
