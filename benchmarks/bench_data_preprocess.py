"""Preprocessing throughput on real text, against `tokenizers`' own batch encoder.

Corpus: the Python standard library's sources (as `neox demo` uses them), up to --megabytes,
one JSON line per module. Tokenizer: a byte-level BPE of --vocab-size ids trained on part of it.

Reference: `tokenizers.Tokenizer.encode_batch_fast` (its batch encoder without offsets; plain
`encode_batch` in releases without it) over the same texts, already in memory, in a process of
its own with RAYON_NUM_THREADS = the worker count: the ceiling of any preprocessing tool built
on `tokenizers` (it reads and writes nothing, and its start-up is not timed). neox:
`neox-data preprocess` as a user runs it, in a process of its own with the same
RAYON_NUM_THREADS, the whole job timed (start-up, reading the JSON lines, tokenizing, writing
.bin/.idx), with W workers, with the `hf` engine (`tokenizers` itself) and the `tiktoken`
engine; the two outputs must be byte-identical. With --gpt-neox PATH (a checkout of GPT-NeoX,
whose requirements, lm_dataformat, ftfy, tqdm and torch among them, the running Python has),
GPT-NeoX's own `tools/datasets/preprocess_data.py` runs too, with the same flags, workers and
threads, its output compared with neox's. The runs alternate (reference, hf, tiktoken, and
GPT-NeoX) --repeats times; each ratio to the reference of the same round is printed as median,
min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neox.demo import stdlib_sources
from neox_data import train_bpe_tokenizer

from alternating import spread

NEOX_DATA = [sys.executable, "-m", "neox_data"]


def write_corpus(path: Path, megabytes: float) -> tuple[int, int]:
    """(documents, bytes of text) written to `path` as JSON lines."""
    documents = size = 0
    with path.open("w", encoding="utf-8") as stream:
        for _, text in stdlib_sources(int(megabytes * 1e6)):
            stream.write(json.dumps({"text": text}) + "\n")
            documents, size = documents + 1, size + len(text.encode())
    return documents, size


def reference_seconds(tokenizer: Path, corpus: Path, threads: int) -> tuple[str, float]:
    """Seconds `encode_batch` takes over the corpus's texts, in a fresh process whose Rayon
    pool has `threads` threads (the pool is sized once per process)."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    command = [sys.executable, __file__, "--reference-run", str(tokenizer), str(corpus)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    name, seconds = result.stdout.strip().splitlines()[-2:]
    return name, float(seconds)


def reference_run(tokenizer_file: str, corpus: str) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_file)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    with open(corpus, encoding="utf-8") as stream:
        texts = [json.loads(line)["text"] for line in stream]
    encode(texts[:8])  # the thread pool started before timing
    start = time.perf_counter()
    encode(texts)
    print(encode.__name__)
    print(time.perf_counter() - start)


def gpt_neox_seconds(root: Path, corpus: Path, workers: int, checkout: Path) -> float:
    """Wall-clock seconds of GPT-NeoX's preprocessing script, run as its README shows."""
    script = checkout / "tools" / "datasets" / "preprocess_data.py"
    command = [sys.executable, str(script), *preprocess_flags(root, corpus, workers, "gpt_neox")]
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers)}
    start = time.perf_counter()
    run(command, env)
    return time.perf_counter() - start


def run(command: list[str], env: dict[str, str]) -> None:
    """`command`, stopping the benchmark with its own last line of error when it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise SystemExit(f"bench_data_preprocess: {' '.join(command[:4])} ...: {lines[-1]}")


def preprocess_flags(root: Path, corpus: Path, workers: int, name: str) -> list[str]:
    """The flags GPT-NeoX's script and `neox-data preprocess` share."""
    return [
        *("--input", str(corpus), "--output-prefix", str(root / f"{name}{workers}")),
        *("--tokenizer-type", "HFTokenizer", "--vocab-file", str(root / "tokenizer.json")),
        *("--append-eod", "--workers", str(workers)),
    ]


def neox_seconds(root: Path, corpus: Path, workers: int, engine: str) -> float:
    """Wall-clock seconds of `neox-data preprocess` as a user runs it (a process of its own,
    startup included), its Rayon pool held to `workers` threads as the reference's is (with one
    worker it tokenizes in its own process; with more, each worker uses one thread)."""
    command = [
        *(*NEOX_DATA, "preprocess", *preprocess_flags(root, corpus, workers, engine)),
        *("--tokenizer-engine", engine, "--overwrite"),
    ]
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers)}
    start = time.perf_counter()
    run(command, env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpt-neox", type=Path, help="a GPT-NeoX checkout: its script runs too")
    parser.add_argument("--reference-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_run:
        reference_run(*args.reference_run)
        return
    counts = [w for w in map(int, args.workers.split(",")) if w <= (os.cpu_count() or 1)]
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        corpus = root / "stdlib.jsonl"
        documents, size = write_corpus(corpus, args.megabytes)
        texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")]
        tokenizer = train_bpe_tokenizer(texts[::10], args.vocab_size, root / "tokenizer.json")
        print(
            f"bench_data_preprocess: {documents} standard-library modules, {size / 1e6:.1f} MB; "
            f"byte-level BPE of {tokenizer.vocab_size} ids; reference: tokenizers' batch "
            f"encoder on the texts in memory, RAYON_NUM_THREADS = workers; "
            f"{args.repeats} alternating rounds"
        )
        for workers in counts:
            bench_workers(root, corpus, size, workers, args.repeats, args.gpt_neox)


def same_output(root: Path, workers: int, name: str) -> bool:
    """Whether run `name` wrote the very bytes neox's hf engine wrote."""
    return all(
        (root / f"hf{workers}_text_document{suffix}").read_bytes()
        == (root / f"{name}{workers}_text_document{suffix}").read_bytes()
        for suffix in (".bin", ".idx")
    )


def bench_workers(
    root: Path, corpus: Path, size: int, workers: int, repeats: int, gpt_neox: Path | None
) -> None:
    """Alternating rounds with `workers` workers; one line of MB/s and ratios."""
    names = ["hf", "tiktoken"] + (["gpt_neox"] if gpt_neox else [])
    ratios: dict[str, list[float]] = {name: [] for name in names}
    speeds: dict[str, list[float]] = {name: [] for name in ["reference", *names]}
    for _ in range(repeats):
        encoder, reference = reference_seconds(root / "tokenizer.json", corpus, workers)
        speeds["reference"].append(size / 1e6 / reference)
        for name in names:
            if name == "gpt_neox" and gpt_neox:
                seconds = gpt_neox_seconds(root, corpus, workers, gpt_neox)
            else:
                seconds = neox_seconds(root, corpus, workers, name)
            speeds[name].append(size / 1e6 / seconds)
            ratios[name].append(reference / seconds)
    label = {"hf": "neox hf", "tiktoken": "neox tiktoken", "gpt_neox": "GPT-NeoX's script"}
    mbs = ", ".join(f"{label[n]} {statistics.median(speeds[n]):.2f}" for n in names)
    versus = ", ".join(f"{label[n]} {spread(ratios[n])}" for n in names)
    same = ", ".join(f"{label[n]} {same_output(root, workers, n)}" for n in names[1:])
    print(
        f"bench_data_preprocess: {workers} worker(s): MB/s reference ({encoder}) "
        f"{statistics.median(speeds['reference']):.2f}, {mbs}; over the reference: {versus}; "
        f"output identical to neox hf's: {same}"
    )


if __name__ == "__main__":
    main()
