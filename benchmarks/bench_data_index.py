"""GPT sample index: build time at corpus scale, and random-access read speed.

1. Build: doc_idx + sample_idx + shuffle_idx for a synthetic corpus (default 50M documents,
   10B tokens, sequence length 2048, one epoch), against the issue's target of 7 s on one core.
   Reference: Megatron-Core's own index build, as its GPTDataset runs it (its document and
   shuffle index functions, and `build_sample_idx` from its C++ helpers), on the same sizes,
   when `megatron-core` is installed (`nox -s bench` installs it); the two sample_idx must be
   equal given the same doc_idx. The runs alternate over --rounds rounds; the ratio of the whole
   build and of the sample_idx step alone are printed as median, min and max. Without
   megatron-core the reference is an in-process fallback, named as such in the output: the
   sample_idx of a slice of the corpus built by a per-document Python loop.
2. Random access: samples per second read in shuffled order from a packed dataset over a
   synthetic token file, against the target of 50k/s, and the ratio to reading each sample
   document by document with `TokenFile.get` (the previous implementation).

Single-threaded numpy (and C++); pin to one core with ``taskset -c 0`` for the one-core figure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from neox_data import GPTDataset, TokenFile, TokenFileWriter
from neox_data.gpt_dataset import build_index, build_sample_idx

from alternating import ratios, spread, time_rounds


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


def megatron_core_helpers():  # type: ignore[no-untyped-def]
    """Megatron-Core's dataset index module and C++ helpers, or None when not installed."""
    try:
        import warnings

        with warnings.catch_warnings():  # it warns of its missing GPU libraries
            warnings.simplefilter("ignore")
            from megatron.core.datasets import gpt_dataset, helpers
    except ImportError:
        return None
    return gpt_dataset, helpers


def megatron_core_build(modules, sizes: np.ndarray, seq_length: int, seed: int):  # type: ignore[no-untyped-def]
    """Megatron-Core's doc_idx, sample_idx and shuffle_idx (one epoch), and the seconds of its
    sample_idx step alone."""
    gpt_dataset, helpers = modules
    rng = np.random.RandomState(seed)
    doc_idx = gpt_dataset._build_document_index(np.arange(len(sizes)), 1, rng, False)
    start = time.perf_counter()
    tokens = int(sizes.sum(dtype=np.int64))
    sample_idx = helpers.build_sample_idx(sizes, doc_idx, seq_length, 1, tokens, True, True)
    sample_seconds = time.perf_counter() - start
    samples = sample_idx.shape[0] - 1
    shuffle_idx = gpt_dataset._build_shuffle_index(samples, samples, rng)
    return (doc_idx, sample_idx, shuffle_idx), sample_seconds


def neox_build(sizes: np.ndarray, seq_length: int, seed: int):  # type: ignore[no-untyped-def]
    num_samples = (int(sizes.sum(dtype=np.int64)) - 1) // seq_length
    return build_index(sizes, np.arange(len(sizes)), num_samples, seq_length, seed=seed)


def bench_build(documents: int, tokens: int, seq_length: int, rounds: int, slice_: int) -> None:
    sizes = synthetic_sizes(documents, tokens)
    total = int(sizes.sum(dtype=np.int64))
    num_samples = (total - 1) // seq_length
    modules = megatron_core_helpers()
    times: dict[str, list[float]] = {
        "neox": [],
        "reference": [],
        "neox_sample": [],
        "ref_sample": [],
    }
    for _ in range(rounds):
        start = time.perf_counter()
        index = neox_build(sizes, seq_length, 1234)
        times["neox"].append(time.perf_counter() - start)
        start = time.perf_counter()
        build_sample_idx(sizes, num_samples, seq_length, index["doc_idx"])
        times["neox_sample"].append(time.perf_counter() - start)
        if modules is not None:
            start = time.perf_counter()
            reference, sample_seconds = megatron_core_build(modules, sizes, seq_length, 1234)
            times["reference"].append(time.perf_counter() - start)
            times["ref_sample"].append(sample_seconds)
        del index
    seconds = statistics.median(times["neox"])
    print(
        f"bench_data_index build: {documents / 1e6:.0f}M documents, {total / 1e9:.2f}B tokens, "
        f"seq {seq_length}, {num_samples} samples, {rounds} alternating rounds: neox "
        f"{spread(times['neox'])} s (target < 7 s: {'met' if seconds < 7 else 'NOT met'})"
    )
    if modules is None:
        python_loop_reference(sizes[:slice_], seq_length)
        return
    doc_idx = reference[0]
    same = np.array_equal(build_sample_idx(sizes, num_samples, seq_length, doc_idx), reference[1])
    print(
        f"  reference: Megatron-Core {megatron_core_version()} index build (numpy shuffles, C++ "
        f"build_sample_idx) {spread(times['reference'])} s; neox/reference whole build "
        f"{spread(ratios(times['reference'], times['neox']))}, sample_idx step alone "
        f"{spread(ratios(times['ref_sample'], times['neox_sample']))}; same sample_idx: {same}"
    )


def megatron_core_version() -> str:
    from importlib.metadata import version

    return version("megatron-core")


def python_loop_reference(part: np.ndarray, seq_length: int) -> None:
    """The fallback reference: sample_idx of a slice built by a per-document Python loop."""
    part_samples = (int(part.sum(dtype=np.int64)) - 1) // seq_length
    doc_idx = build_index(part, np.arange(len(part)), part_samples, seq_length, 1)["doc_idx"]
    start = time.perf_counter()
    ours = build_sample_idx(part, part_samples, seq_length, doc_idx)
    vectorised = time.perf_counter() - start
    start = time.perf_counter()
    reference = python_loop_sample_idx(part[doc_idx], part_samples, seq_length)
    loop = time.perf_counter() - start
    assert ours.tolist() == [list(pair) for pair in reference]
    print(
        f"  reference: megatron-core not installed; fallback: a per-document Python loop, "
        f"sample_idx of {len(part)} documents: vectorised {vectorised * 1e3:.1f} ms, loop "
        f"{loop * 1e3:.1f} ms, ratio {loop / vectorised:.0f}x"
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


def bench_random_access(
    documents: int, tokens: int, seq_length: int, reads: int, rounds: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        token_file = write_corpus(Path(directory) / "corpus", documents, tokens)
        num_samples = (token_file.num_tokens - 1) // seq_length
        dataset = GPTDataset(token_file, np.arange(documents), num_samples, seq_length, 7)
        order = np.random.default_rng(3).integers(0, num_samples, reads).tolist()
        for i in order:  # warm up: map the token and index pages both readers touch
            read_by_documents(dataset, int(dataset.shuffle_idx[i]))
        runs = {
            "neox": lambda: [dataset[i] for i in order],
            "reference": lambda: [
                read_by_documents(dataset, int(dataset.shuffle_idx[i])) for i in order
            ],
        }
        seconds = time_rounds(runs, rounds)
        ours = reads / statistics.median(seconds["neox"])
        mean_length = token_file.num_tokens / documents
        print(
            f"bench_data_index random access: seq {seq_length}, mean document {mean_length:.0f} "
            f"tokens, {rounds} alternating rounds of {reads} reads: neox {ours / 1e3:.1f}k "
            f"samples/s (target >= 50k: {'met' if ours >= 5e4 else 'NOT met'}); reference: a "
            f"TokenFile.get per document of the sample (the previous reader) "
            f"{reads / statistics.median(seconds['reference']) / 1e3:.1f}k/s; neox/reference "
            f"{spread(ratios(seconds['reference'], seconds['neox']))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=50_000_000)
    parser.add_argument("--tokens", type=int, default=10_000_000_000)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slice-documents", type=int, default=200_000)
    parser.add_argument("--access-documents", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()
    bench_build(args.documents, args.tokens, args.seq_length, args.rounds, args.slice_documents)
    access_tokens = math.ceil(args.access_documents * args.tokens / args.documents)
    bench_random_access(
        args.access_documents, access_tokens, args.seq_length, args.reads, args.rounds
    )


if __name__ == "__main__":
    main()
