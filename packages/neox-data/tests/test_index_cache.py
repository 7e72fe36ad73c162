"""Sample-index caching: GPT-NeoX-like .npy names, atomic files, one builder among processes."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from neox_data import GPTDataset, TokenFile, TokenFileWriter
from neox_data.index_cache import CacheSource, load_or_build


@pytest.fixture
def token_file(tmp_path: Path) -> TokenFile:
    rng = np.random.default_rng(0)
    with TokenFileWriter(tmp_path / "data" / "corpus", np.uint16) as writer:
        for _ in range(200):
            writer.add_document(rng.integers(0, 60000, rng.integers(1, 50)))
    return TokenFile(tmp_path / "data" / "corpus")


def npy_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".npy")


def test_index_is_cached_beside_the_data_and_loaded_next_time(token_file: TokenFile) -> None:
    documents = np.arange(150)
    first = GPTDataset(token_file, documents, 300, 16, seed=7, name="valid")
    assert first.index_source is CacheSource.BUILT
    names = npy_names(token_file.prefix.parent)
    assert len(names) == 3
    for name, kind in zip(names, ("doc_idx", "sample_idx", "shuffle_idx"), strict=True):
        assert name.startswith("corpus_valid_indexmap_300ns_16sl_7s_")
        assert name.endswith(f"_{kind}.npy")
    second = GPTDataset(token_file, documents, 300, 16, seed=7, name="valid")
    assert second.index_source is CacheSource.LOADED
    assert not second.doc_idx.flags.writeable  # memory-mapped from the cache file
    uncached = GPTDataset(token_file, documents, 300, 16, seed=7, cache=False)
    assert uncached.index_source is CacheSource.MEMORY
    for i in range(len(first)):
        assert first[i].tolist() == second[i].tolist() == uncached[i].tolist()


def test_another_document_set_gets_its_own_cache_entry(token_file: TokenFile) -> None:
    GPTDataset(token_file, np.arange(150), 300, 16, seed=7)
    other = GPTDataset(token_file, np.arange(50, 200), 300, 16, seed=7)
    assert other.index_source is CacheSource.BUILT
    assert len(npy_names(token_file.prefix.parent)) == 6
    assert set(other.doc_idx.tolist()) == set(range(50, 200))


def test_an_unwritable_cache_directory_falls_back_to_memory(token_file: TokenFile, caplog) -> None:
    blocker = token_file.prefix.parent / "a_file"
    blocker.write_text("not a directory")
    dataset = GPTDataset(token_file, np.arange(200), 50, 8, seed=1, cache_dir=blocker / "cache")
    assert dataset.index_source is CacheSource.MEMORY
    assert "building them in memory" in caplog.text
    assert len(dataset[0]) == 9


def test_a_failed_build_leaves_no_files_and_the_next_one_builds(tmp_path: Path) -> None:
    def broken() -> dict[str, np.ndarray]:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError):
        load_or_build(tmp_path / "entry", ["a"], broken)
    assert [p.name for p in tmp_path.iterdir()] == ["entry.lock"]
    arrays, source = load_or_build(tmp_path / "entry", ["a"], lambda: {"a": np.arange(3)})
    assert source is CacheSource.BUILT
    assert arrays["a"].tolist() == [0, 1, 2]


def slow_build(marker_dir: str) -> dict[str, np.ndarray]:
    Path(marker_dir, f"built-by-{os.getpid()}").touch()
    time.sleep(0.5)  # long enough for the other processes to reach the lock
    return {"numbers": np.arange(1000) * 3, "more": np.ones((4, 2))}


def race(stem: str, marker_dir: str, barrier) -> tuple[str, int]:
    barrier.wait()
    arrays, source = load_or_build(Path(stem), ["numbers", "more"], lambda: slow_build(marker_dir))
    return source.value, int(arrays["numbers"].sum() + arrays["more"].sum())


def test_processes_starting_together_build_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = 3
    with context.Manager() as manager, context.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        args = [(str(tmp_path / "cache" / "entry"), str(tmp_path), barrier)] * processes
        results = pool.starmap(race, args)
    assert sorted(source for source, _ in results) == ["built", "loaded", "loaded"]
    assert {total for _, total in results} == {3 * 999 * 1000 // 2 + 8}
    assert len(list(tmp_path.glob("built-by-*"))) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def gpt_samples(prefix: str, barrier) -> tuple[str, list[list[int]]]:
    barrier.wait()
    dataset = GPTDataset(TokenFile(prefix), np.arange(200), 400, 32, seed=3)
    return dataset.index_source.value, [dataset[i].tolist() for i in range(0, 400, 37)]


def test_ranks_starting_together_share_one_gpt_index(token_file: TokenFile) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        results = pool.starmap(gpt_samples, [(str(token_file.prefix), barrier)] * 2)
    assert sorted(source for source, _ in results) == ["built", "loaded"]
    assert results[0][1] == results[1][1]
