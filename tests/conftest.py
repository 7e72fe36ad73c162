"""Cross-package end-to-end tests: the `neox` command as a user runs it."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neox_testing import tiny_run

MODULES = ("textwrap", "json/decoder", "string", "difflib", "shlex", "fnmatch", "argparse")
# Fault-injection hooks (a sitecustomize.py) for the processes given `hooked(...)` variables.
HOOKS = Path(__file__).parent / "fault_hooks"


def neox(*args, timeout=600, env=None):
    """Run the installed `neox` command (`env` added to this environment) to its end; returns
    the CompletedProcess."""
    proc = neox_process(*args, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def neox_process(*args, env=None):
    """`neox ...` in the background, its output captured, in its own session (a process group
    of its own, as a batch job's), every stop signal at its default disposition (a background
    shell's jobs ignore SIGINT) and the usual umask."""
    return subprocess.Popen(
        [sys.executable, "-m", "neox", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        preexec_fn=_child_defaults,
    )


def _child_defaults():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    os.umask(0o022)


def hooked(**variables):
    """Environment that loads the fault hooks (see fault_hooks/sitecustomize.py) with
    `variables` set."""
    path = os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, **{k: str(v) for k, v in variables.items()}}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A jsonl corpus, a tokenizer trained on it and the token file, made through the CLI."""
    root = tmp_path_factory.mktemp("corpus")
    stdlib = Path(json.__file__).parent.parent
    with (root / "docs.jsonl").open("w") as stream:
        for name in MODULES:
            for chunk in (stdlib / f"{name}.py").read_text().split("\n\n\n"):
                stream.write(json.dumps({"text": chunk}) + "\n")
    steps = [
        (
            "data",
            "train-tokenizer",
            "--input",
            root / "docs.jsonl",
            "--vocab-size",
            512,
            "--output",
            root / "tokenizer.json",
        ),
        (
            "data",
            "preprocess",
            "--input",
            root / "docs.jsonl",
            "--output-prefix",
            root / "docs",
            "--tokenizer-type",
            "HFTokenizer",
            "--vocab-file",
            root / "tokenizer.json",
            "--append-eod",
            "--workers",
            2,
        ),
    ]
    for args in steps:
        result = neox(*args)
        assert result.returncode == 0, result.stderr
    return root


def run_config(corpus, save, **overrides):
    """Run-config values of a tiny run on the corpus, started by the local launcher."""
    data = (corpus / "docs_text_document", corpus / "tokenizer.json")
    return tiny_run(*data, save, **{"launcher": "local", **overrides})


def train_losses(save):
    """step -> training loss of a run's metrics.jsonl."""
    from neox_train.monitoring.metrics import read_metrics

    records = read_metrics(save / "metrics.jsonl")
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values))
    return path
