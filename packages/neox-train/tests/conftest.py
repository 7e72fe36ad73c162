import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neox_data import TokenFileWriter, best_dtype, train_bpe_tokenizer

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


def tiny_config(data_dir, save_dir, **overrides):
    values = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        seq_length=32,
        pos_emb="rotary",
        rotary_pct=0.5,
        gpt_j_residual=True,
        no_weight_tying=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        optimizer={"type": "Adam", "params": {"lr": 3.0e-3, "betas": [0.9, 0.95]}},
        lr_decay_style="cosine",
        warmup=0.2,
        weight_decay=0.01,
        train_iters=5,
        eval_interval=100,
        eval_iters=2,
        log_interval=1,
        zero_optimization={"stage": 1},
        seed=7,
        data_path=str(data_dir / "corpus"),
        split="90, 10, 0",
        tokenizer_type="HFTokenizer",
        vocab_file=str(data_dir / "tokenizer.json"),
        save=str(save_dir),
    )
    values.update(overrides)
    return values


def losses(save_dir, key="train_loss"):
    """step -> `key` (train_loss by default) of a run's metrics.jsonl."""
    from neox_train.monitoring.metrics import read_metrics

    return {r["step"]: r[key] for r in read_metrics(save_dir / "metrics.jsonl") if key in r}


def write_config(path, values):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_workers(configs, world_size):
    """Start `python -m neox_train train` as `world_size` ranks, like a launcher would."""
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        cmd = [sys.executable, "-m", "neox_train", "train", *map(str, configs)]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    return procs


def run_workers(configs, world_size, timeout=300):
    """Run the ranks to the end; every one must succeed. Returns rank 0's output."""
    procs = start_workers(configs, world_size)
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, textwrap.shorten(out[-3000:], 3000)
    return outputs[0]
