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
engine; the two outputs must be byte-identical. The runs alternate (reference, hf, tiktoken)
--repeats times; each ratio to the reference of the same round is printed as median, min and
max.
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


def neox_seconds(root: Path, corpus: Path, workers: int, engine: str) -> float:
    """Wall-clock seconds of `neox-data preprocess` as a user runs it (a process of its own,
    startup included), its Rayon pool held to `workers` threads as the reference's is (with one
    worker it tokenizes in its own process; with more, each worker uses one thread)."""
    command = [
        *NEOX_DATA,
        "preprocess",
        "--input",
        str(corpus),
        "--output-prefix",
        str(root / f"{engine}{workers}"),
        "--tokenizer-type",
        "HFTokenizer",
        "--vocab-file",
        str(root / "tokenizer.json"),
        "--append-eod",
        "--workers",
        str(workers),
        "--tokenizer-engine",
        engine,
        "--overwrite",
    ]
    env = {**os.environ, "RAYON_NUM_THREADS": str(workers)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
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
            ratios: dict[str, list[float]] = {"hf": [], "tiktoken": []}
            speeds: dict[str, list[float]] = {"reference": [], "hf": [], "tiktoken": []}
            for _ in range(args.repeats):
                encoder, reference = reference_seconds(root / "tokenizer.json", corpus, workers)
                speeds["reference"].append(size / 1e6 / reference)
                for engine in ("hf", "tiktoken"):
                    seconds = neox_seconds(root, corpus, workers, engine)
                    speeds[engine].append(size / 1e6 / seconds)
                    ratios[engine].append(reference / seconds)
            same = all(
                (root / f"hf{workers}_text_document{suffix}").read_bytes()
                == (root / f"tiktoken{workers}_text_document{suffix}").read_bytes()
                for suffix in (".bin", ".idx")
            )
            print(
                f"bench_data_preprocess: {workers} worker(s): MB/s reference ({encoder}) "
                f"{statistics.median(speeds['reference']):.2f}, neox hf "
                f"{statistics.median(speeds['hf']):.2f}, neox tiktoken "
                f"{statistics.median(speeds['tiktoken']):.2f}; neox/reference: hf engine "
                f"{spread(ratios['hf'])}, tiktoken engine {spread(ratios['tiktoken'])}; "
                f"outputs identical: {same}"
            )


if __name__ == "__main__":
    main()
