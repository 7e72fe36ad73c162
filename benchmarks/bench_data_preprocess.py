"""Preprocessing throughput: worker scaling, and the tiktoken engine against ``tokenizers``.

A synthetic JSON-lines corpus (default 100 MB of Zipf-distributed words) is tokenized with a
byte-level BPE trained on part of it. The reference is the single-process per-document encode
throughput of the same tokenizer (``encode`` in a loop, no I/O); each ``neox-data preprocess``
run with W workers and the ``hf`` engine is printed as MB/s and as a ratio to W times that
reference (the issue's target: at least 0.9). Then the same runs with the ``tiktoken`` engine,
their ratio to the ``hf`` run of the same worker count (target: at least 3) and a check that
the two outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from neox_data import HFTokenizer, preprocess, train_bpe_tokenizer


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> list[str]:
    """Documents of 200 to 4000 words drawn from a Zipf law over 30k made-up words."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 11))) for _ in range(30_000)]
    texts: list[str] = []
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            picks = np.minimum(rng.zipf(1.2, rng.integers(200, 4000)), len(words)) - 1
            text = " ".join(words[i] for i in picks.tolist()) + "."
            texts.append(text)
            line = json.dumps({"text": text}) + "\n"
            handle.write(line)
            written += len(line)
    return texts


def encode_reference(tokenizer: HFTokenizer, texts: list[str]) -> float:
    """MB/s of one process calling ``encode`` document by document."""
    sample = texts[: max(1, len(texts) // 5)]
    start = time.perf_counter()
    for text in sample:
        tokenizer.encode(text)
    seconds = time.perf_counter() - start
    return sum(len(t.encode()) for t in sample) / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args()
    counts = [w for w in map(int, args.workers.split(",")) if w <= (os.cpu_count() or 1)]
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        texts = write_corpus(root / "corpus.jsonl", args.megabytes)
        tokenizer = train_bpe_tokenizer(texts[:200], args.vocab_size, root / "tokenizer.json")
        reference = encode_reference(tokenizer, texts)
        print(
            f"corpus {args.megabytes:.0f} MB, {len(texts)} documents; per-document encode "
            f"in one process: {reference:.2f} MB/s"
        )
        for workers in counts:
            speeds = {}
            for engine in ("hf", "tiktoken"):
                result = preprocess(
                    root / "corpus.jsonl",
                    root / f"{engine}{workers}",
                    tokenizer.spec,
                    append_eod=True,
                    workers=workers,
                    progress=False,
                    tokenizer_engine=engine,
                )
                speeds[engine] = result.megabytes_per_second
                print(
                    f"workers {workers}, {engine} engine: {speeds[engine]:.2f} MB/s, "
                    f"{result.tokens / result.seconds / 1e6:.2f}M tokens/s"
                )
            same = all(
                (root / f"hf{workers}_text_document{suffix}").read_bytes()
                == (root / f"tiktoken{workers}_text_document{suffix}").read_bytes()
                for suffix in (".bin", ".idx")
            )
            print(
                f"workers {workers}: hf engine / ({workers} x reference) = "
                f"{speeds['hf'] / (workers * reference):.2f}; tiktoken / hf = "
                f"{speeds['tiktoken'] / speeds['hf']:.2f}x; outputs identical: {same}"
            )


if __name__ == "__main__":
    main()
