import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neox_data import TokenFileWriter, best_dtype, train_bpe_tokenizer
from neox_testing import side_by_side, start_ranks, tiny_run

CORPUS_MODULES = ("textwrap", "json/decoder", "string", "difflib", "shlex", "fnmatch")


def corpus_texts():
    root = Path(json.__file__).parent.parent
    return [(root / f"{name}.py").read_text() for name in CORPUS_MODULES]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A trained tokenizer and a token file built from a few standard-library modules."""
    root = tmp_path_factory.mktemp("data")
    texts = corpus_texts()
    tokenizer = train_bpe_tokenizer(texts, 400, root / "tokenizer.json")
    with TokenFileWriter(root / "corpus", best_dtype(tokenizer.vocab_size)) as writer:
        for text in texts:
            for chunk in text.split("\n\n\n"):  # many small documents
                if chunk.strip():
                    writer.add_document([*tokenizer.encode(chunk), tokenizer.eod_id])
    return root


# the tiny run of these tests: TINY_RUN half as wide and long, rotary over half of each head
TRAINING = dict(
    hidden_size=32,
    seq_length=32,
    rotary_pct=0.5,
    optimizer={"type": "Adam", "params": {"lr": 3.0e-3, "betas": [0.9, 0.95]}},
    weight_decay=0.01,
    seed=7,
    split="90, 10, 0",
)


def tiny_config(data_dir, save_dir, **overrides):
    """Run-config values of a tiny run on `data_dir`'s corpus, saving to `save_dir`."""
    data = (data_dir / "corpus", data_dir / "tokenizer.json")
    return tiny_run(*data, save_dir, **{**TRAINING, **overrides})


def write_run(data_dir, tmp_path, name, **overrides):
    """`tmp_path / f"{name}.yml"`: a tiny run saving to `tmp_path / name`, with micro batches of 2
    samples (unless `overrides` say otherwise)."""
    values = tiny_config(
        data_dir, tmp_path / name, **{"train_micro_batch_size_per_gpu": 2, **overrides}
    )
    return write_config(tmp_path / f"{name}.yml", values)


def losses(save_dir, key="train_loss"):
    """step -> `key` (train_loss by default) of a run's metrics.jsonl."""
    from neox_train.monitoring.metrics import read_metrics

    return {r["step"]: r[key] for r in read_metrics(save_dir / "metrics.jsonl") if key in r}


def as_if_killed_after(run_dir, saved_step, lost_step):
    """Make `run_dir` a run killed after saving `saved_step`: the checkpoint of `lost_step` gone,
    `latest` pointing back, no metrics.jsonl."""
    shutil.rmtree(run_dir / f"global_step{lost_step}")
    (run_dir / "latest").write_text(f"global_step{saved_step}\n")
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)


def step_only(run_dir, into, step=5):
    """A run directory `into` whose newest (and only) checkpoint is `run_dir`'s step `step`."""
    shutil.copytree(run_dir / f"global_step{step}", into / f"global_step{step}")
    (into / "latest").write_text(f"global_step{step}\n")
    return into


def write_config(path, values):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def neox_train(*args, timeout=300, env=None):
    """`python -m neox_train ARGS` in one process to its end; its output captured."""
    command = [sys.executable, "-m", "neox_train", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def train_without(config, module, timeout=300):
    """`neox-train train CONFIG` in one process where `module` is not found and importing it
    fails, as when the extra that installs it is missing."""
    code = (
        "import sys, builtins, importlib.util as util\n"
        "real, real_find = builtins.__import__, util.find_spec\n"
        "def fake(name, *a, **k):\n"
        f"    if name.startswith({module!r}): raise ImportError(name)\n"
        "    return real(name, *a, **k)\n"
        f"util.find_spec = lambda name, *a: None if name == {module!r} else real_find(name, *a)\n"
        "builtins.__import__ = fake\n"
        "from neox_train.cli import main; sys.exit(main(['train', sys.argv[1]]))"
    )
    command = [sys.executable, "-c", code, str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def start_workers(configs, world_size):
    """Start `python -m neox_train train` as `world_size` ranks, like a launcher would."""
    command = [sys.executable, "-m", "neox_train", "train", *configs]
    return start_ranks(command, world_size, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_workers(configs, world_size, timeout=300):
    """Run the ranks to the end; every one must succeed. Returns rank 0's output."""
    procs = start_workers(configs, world_size)
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, textwrap.shorten(out[-3000:], 3000)
    return outputs[0]


def run_side_by_side(runs, lanes=2, timeout=300):
    """`run_workers(configs, world_size)` for each `(configs, world_size)` of `runs`, `lanes` runs
    at a time (`side_by_side`). Each run's rank 0 output, in order."""
    calls = {index: (run_workers, *run, timeout) for index, run in enumerate(runs)}
    return [future.result() for future in side_by_side(calls, lanes).values()]
