"""`neox-train generate`: the three GPT-NeoX modes, a prompt, tensor parallelism."""

import json
import os
import pty
import select
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from neox_testing import start_ranks

from conftest import neox_train, run_workers, tiny_config, write_config


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    values = tiny_config(
        data_dir,
        root / "run",
        train_micro_batch_size_per_gpu=4,
        train_iters=20,
        warmup=0.1,
        eval_iters=1,
        optimizer={"type": "adam", "params": {"lr": 1.0e-2}},
    )
    run_workers([write_config(root / "train.yml", values)], 1)
    return root / "run"


def generate(*args, env=None):
    proc = neox_train("generate", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def generate_side_by_side(*commands):
    """`generate(*args)` for each of `commands` at once (one process each, on one core); their
    outputs in order."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        started = [pool.submit(generate, *args) for args in commands]
        return [future.result() for future in started]


WRAP_PROMPT = ("--prompt", "def wrap(", "--max-new-tokens", 10)
CLASS_PROMPT = ("--prompt", "class ", "--max-new-tokens", 12)


def gen_config(tmp_path, checkpoint, name="gen", **keys):
    return write_config(tmp_path / f"{name}.yml", {"load": str(checkpoint), **keys})


def read_samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unconditional_samples_are_written_and_repeatable(checkpoint, tmp_path):
    configs = [
        gen_config(
            tmp_path,
            checkpoint,
            name,
            text_gen_type="unconditional",
            num_samples=3,
            maximum_tokens=8,
            temperature=0.8,
            top_k=20,
            sample_output_file=str(tmp_path / f"{name}.jsonl"),
        )
        for name in ("first", "again")
    ]
    generate_side_by_side(*[(config,) for config in configs])  # two runs of the same config
    first = read_samples(tmp_path / "first.jsonl")
    assert len(first) == 3 and all(s["context"] == "" for s in first)
    assert all(0 < len(s["tokens"]) <= 8 for s in first)
    assert len({tuple(s["tokens"]) for s in first}) > 1  # sampled, not greedy
    assert read_samples(tmp_path / "again.jsonl") == first  # the seed fixes the draws


def test_input_file_prompts(checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def wrap(\nclass Text\n\n")
    out = tmp_path / "out.jsonl"
    config = gen_config(
        tmp_path,
        checkpoint,
        text_gen_type="input-file",
        num_samples=2,
        maximum_tokens=6,
        sample_input_file=str(prompts),
        sample_output_file=str(out),
        stop_tokens=["\n"],
    )
    generate(config)
    samples = read_samples(out)
    assert [s["context"] for s in samples] == ["def wrap(", "def wrap(", "class Text", "class Text"]
    assert samples[0] == samples[1]  # greedy: the same twice
    assert all("\n" not in s["text"][:-1] for s in samples)  # stopped at the first newline


def test_a_prompt_on_the_command_line_and_recompute(checkpoint, tmp_path):
    cached, recomputed, compiled = generate_side_by_side(
        ("--checkpoint", checkpoint, *WRAP_PROMPT),
        (gen_config(tmp_path, checkpoint, "recompute", recompute=True), *WRAP_PROMPT),
        (gen_config(tmp_path, checkpoint, "compiled", compile_decoding=True), *WRAP_PROMPT),
    )
    assert cached.startswith("def wrap(")
    assert recomputed == cached
    assert compiled == cached


def test_tensor_parallel_generation_gives_the_same_text(checkpoint, tmp_path):
    config = gen_config(tmp_path, checkpoint)
    command = [sys.executable, "-m", "neox_train", "generate", config, *CLASS_PROMPT]
    workers = start_ranks(command, 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    single = generate("--checkpoint", checkpoint, *CLASS_PROMPT)  # while the ranks run
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]
        outputs.append(out)
    assert outputs[0] == single  # rank 0 prints; the shards together compute the same text
    assert outputs[1] == ""


def test_interactive_mode_in_a_terminal(checkpoint, tmp_path):
    keys = dict(maximum_tokens=8, temperature=1.0, top_k=50)  # sampled: visible characters
    prompted = (gen_config(tmp_path, checkpoint, **keys), "--prompt", "def wrap(")
    config = gen_config(tmp_path, checkpoint, "interactive", text_gen_type="interactive", **keys)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the generate command on a pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "neox_train", "generate", str(config)])
    with ThreadPoolExecutor(max_workers=1) as pool:  # the prompt on the command line meanwhile
        expecting = pool.submit(generate, *prompted)
        transcript = read_until(fd, b"Context prompt >>> ")
        os.write(fd, b"def wrap(\n")
        transcript = read_until(fd, b"Context prompt >>> ")
        os.write(fd, b"\x04")  # end of input
        read_until(fd, None)
        expected = expecting.result()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = transcript.decode().replace("\r\n", "\n")
    continuation = expected[len("def wrap(") :].rstrip("\n")
    assert continuation.strip(), "the model continues with whitespace only: a weak check"
    assert text.startswith("def wrap(")  # the terminal echoes the prompt line
    assert continuation.strip() in text  # then the continuation streams out


def read_until(fd, marker, timeout=120):
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return data
            if not chunk:
                return data
            data += chunk
            if marker is not None and data.endswith(marker):
                return data
    raise AssertionError(f"no {marker!r} within {timeout}s: {data[-500:]!r}")
