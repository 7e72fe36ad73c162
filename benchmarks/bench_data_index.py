"""GPT sample index: build time at corpus scale, and random-access read speed.

1. Build: doc_idx + sample_idx + shuffle_idx for a synthetic corpus (default 50M documents,
   10B tokens, sequence length 2048, one epoch), against the issue's target of 7 s on one core.
   On a slice of the corpus, sample_idx is also built by a per-document Python loop (how
   Megatron's pure-Python fallback walks the documents), checked equal, and the ratio printed.
2. Random access: samples per second read in shuffled order from a packed dataset over a
   synthetic token file, against the target of 50k/s, and the ratio to reading each sample
   document by document with `TokenFile.get` (the previous implementation).

Single-threaded numpy; pin to one core with ``taskset -c 0`` for the one-core figure.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from neox_data import GPTDataset, TokenFile, TokenFileWriter
from neox_data.gpt_dataset import build_index, build_sample_idx


def synthetic_sizes(documents: int, tokens: int, seed: int = 0) -> np.ndarray:
    """Document lengths (int32) with a long tail, scaled to sum to about ``tokens``."""
    lengths = np.random.default_rng(seed).lognormal(mean=0.0, sigma=1.0, size=documents)
    lengths *= tokens / lengths.sum()
    return np.maximum(lengths, 1).astype(np.int32)


def python_loop_sample_idx(stream_sizes: np.ndarray, num_samples: int, seq_length: int) -> list:
    """The reference: walk the documents one by one, as a per-document loop does."""
    boundaries = [(0, 0)]
    entry, offset = 0, 0
    sizes = stream_sizes.tolist()
    for _ in range(num_samples):
        remaining = seq_length
        while remaining >= sizes[entry] - offset:
            remaining -= sizes[entry] - offset
            entry, offset = entry + 1, 0
        offset += remaining
        boundaries.append((entry, offset))
    return boundaries


def bench_build(documents: int, tokens: int, seq_length: int, slice_documents: int) -> None:
    sizes = synthetic_sizes(documents, tokens)
    total = int(sizes.sum(dtype=np.int64))
    num_samples = (total - 1) // seq_length
    start = time.perf_counter()
    index = build_index(sizes, np.arange(documents), num_samples, seq_length, seed=1234)
    seconds = time.perf_counter() - start
    print(
        f"index build: {documents / 1e6:.0f}M documents, {total / 1e9:.2f}B tokens, "
        f"seq {seq_length}, {num_samples} samples: {seconds:.2f} s (target < 7 s: "
        f"{'met' if seconds < 7 else 'NOT met'})"
    )
    del index
    part = sizes[:slice_documents]
    part_samples = (int(part.sum(dtype=np.int64)) - 1) // seq_length
    doc_idx = build_index(part, np.arange(slice_documents), part_samples, seq_length, 1)["doc_idx"]
    start = time.perf_counter()
    ours = build_sample_idx(part, part_samples, seq_length, doc_idx)
    vectorised = time.perf_counter() - start
    start = time.perf_counter()
    reference = python_loop_sample_idx(part[doc_idx], part_samples, seq_length)
    loop = time.perf_counter() - start
    assert ours.tolist() == [list(pair) for pair in reference]
    print(
        f"sample_idx on {slice_documents} documents: vectorised {vectorised * 1e3:.1f} ms, "
        f"per-document Python loop {loop * 1e3:.1f} ms, ratio {loop / vectorised:.0f}x"
    )


def write_corpus(prefix: Path, documents: int, tokens: int) -> TokenFile:
    sizes = synthetic_sizes(documents, tokens, seed=1)
    rng = np.random.default_rng(2)
    with TokenFileWriter(prefix, np.uint16) as writer:
        for size in sizes:
            writer.add_document(rng.integers(0, 50000, size, dtype=np.uint16))
    return TokenFile(prefix)


def read_by_documents(dataset: GPTDataset, sample: int) -> np.ndarray:
    """The reference reader: one `TokenFile.get` per document the sample spans."""
    tokens, doc_idx = dataset.token_file, dataset.doc_idx
    (first, first_offset), (last, last_offset) = dataset.sample_idx[sample : sample + 2]
    if first == last:
        length = last_offset - first_offset + 1
        return tokens.get(int(doc_idx[first]), int(first_offset), int(length)).astype(np.int64)
    pieces = [tokens.get(int(doc_idx[first]), int(first_offset))]
    pieces += [tokens.get(int(doc_idx[i])) for i in range(first + 1, last)]
    pieces.append(tokens.get(int(doc_idx[last]), 0, int(last_offset) + 1))
    return np.concatenate(pieces).astype(np.int64)


def bench_random_access(documents: int, tokens: int, seq_length: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        token_file = write_corpus(Path(directory) / "corpus", documents, tokens)
        num_samples = (token_file.num_tokens - 1) // seq_length
        dataset = GPTDataset(token_file, np.arange(documents), num_samples, seq_length, 7)
        order = np.random.default_rng(3).integers(0, num_samples, reads)
        for i in order:  # warm up: map the token and index pages both readers touch
            read_by_documents(dataset, int(dataset.shuffle_idx[int(i)]))
        start = time.perf_counter()
        for i in order:
            dataset[int(i)]
        ours = reads / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in order:
            read_by_documents(dataset, int(dataset.shuffle_idx[int(i)]))
        reference = reads / (time.perf_counter() - start)
        mean_length = token_file.num_tokens / documents
        print(
            f"random access: seq {seq_length}, mean document {mean_length:.0f} tokens: "
            f"{ours / 1e3:.1f}k samples/s (target >= 50k: {'met' if ours >= 5e4 else 'NOT met'}); "
            f"document-by-document reader {reference / 1e3:.1f}k/s, ratio {ours / reference:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=50_000_000)
    parser.add_argument("--tokens", type=int, default=10_000_000_000)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--slice-documents", type=int, default=200_000)
    parser.add_argument("--access-documents", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()
    bench_build(args.documents, args.tokens, args.seq_length, args.slice_documents)
    access_tokens = math.ceil(args.access_documents * args.tokens / args.documents)
    bench_random_access(args.access_documents, access_tokens, args.seq_length, args.reads)


if __name__ == "__main__":
    main()
