"""Corpus preprocessing: tokenize raw documents into GPT-NeoX ``{prefix}_{key}_document`` files."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path

from tqdm import tqdm

from neox_data.corpus import Document, iter_documents, resolve_paths
from neox_data.token_file import TokenFileWriter, best_dtype
from neox_data.tokenizer import Tokenizer, TokenizerSpec

logger = logging.getLogger(__name__)

# Documents sent to a worker process at a time, and chunks in flight per worker.
_CHUNK_SIZE = 64
_CHUNKS_IN_FLIGHT_PER_WORKER = 2

_Chunk = list[Document]
_Encoded = tuple[_Chunk, list[list[int]]]
_EncodedStream = Generator[_Encoded, None, None]


@dataclass(frozen=True)
class PreprocessResult:
    """What `preprocess` wrote. Document and token counts are summed over the JSON keys."""

    outputs: Mapping[str, Path]  # JSON key -> token file prefix (without .bin / .idx)
    documents: int  # documents written
    empty_documents: int  # empty documents counted and skipped
    tokens: int  # tokens written, end-of-document tokens included
    text_bytes: int  # UTF-8 bytes of text read
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        return (
            f"{self.documents} documents ({self.empty_documents} empty, skipped), "
            f"{self.tokens} tokens, {self.megabytes_per_second:.2f} MB/s, {self.seconds:.1f} s"
        )


def output_prefix_for(output_prefix: str | Path, key: str) -> Path:
    """GPT-NeoX's name for the token file of one JSON key."""
    return Path(f"{output_prefix}_{key}_document")


def preprocess(
    inputs: str | Path | Iterable[str | Path],
    output_prefix: str | Path,
    tokenizer: Tokenizer | TokenizerSpec,
    *,
    jsonl_keys: Sequence[str] = ("text",),
    append_eod: bool = False,
    num_docs: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    log_interval: int = 100,
    progress: bool = True,
) -> PreprocessResult:
    """Tokenize every document of ``inputs`` into one token file per JSON key.

    ``num_docs`` is, as in GPT-NeoX, only the expected number of documents for the progress bar.
    With ``workers > 1`` documents are tokenized in spawned processes, each building its own
    tokenizer from a `TokenizerSpec` (pass one, or a tokenizer with a ``spec``, e.g.
    `HFTokenizer`); output order is input order either way.
    """
    _check_options(jsonl_keys, workers, log_interval)
    paths = resolve_paths(inputs)
    local = tokenizer.build() if isinstance(tokenizer, TokenizerSpec) else tokenizer
    spec = _spec_for_workers(tokenizer) if workers > 1 else None
    outputs = {key: output_prefix_for(output_prefix, key) for key in jsonl_keys}
    dtype = best_dtype(local.vocab_size)
    writers = {
        key: TokenFileWriter(prefix, dtype, overwrite=overwrite) for key, prefix in outputs.items()
    }
    eod_id = local.eod_id if append_eod else None
    total = num_docs * len(jsonl_keys) if num_docs else None
    start = time.perf_counter()
    with ExitStack() as stack:
        for writer in writers.values():
            stack.enter_context(writer)
        chunks = _chunked(iter_documents(paths, jsonl_keys), _CHUNK_SIZE)
        encoded = (
            _encode_serial(chunks, local)
            if spec is None
            else _encode_parallel(chunks, spec, workers)
        )
        stack.enter_context(closing(encoded))
        bar = stack.enter_context(
            tqdm(total=total, unit="docs", desc="tokenizing", file=sys.stderr, disable=not progress)
        )
        counts = _write_all(encoded, writers, eod_id, bar, log_interval)
    result = PreprocessResult(outputs, *counts, seconds=time.perf_counter() - start)
    logger.info("%s", result.summary())
    return result


def _check_options(jsonl_keys: Sequence[str], workers: int, log_interval: int) -> None:
    if not jsonl_keys:
        raise ValueError("at least one JSON key is needed (--jsonl-keys)")
    if len(set(jsonl_keys)) != len(jsonl_keys):
        raise ValueError(f"duplicate JSON keys in {list(jsonl_keys)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if log_interval < 1:
        raise ValueError(f"log_interval must be at least 1, got {log_interval}")


def _spec_for_workers(tokenizer: Tokenizer | TokenizerSpec) -> TokenizerSpec:
    if isinstance(tokenizer, TokenizerSpec):
        return tokenizer
    spec = getattr(tokenizer, "spec", None)
    if isinstance(spec, TokenizerSpec):
        return spec
    raise ValueError(
        f"workers > 1 needs a TokenizerSpec (or a tokenizer with a .spec) so that each worker "
        f"process can build its own tokenizer; got {type(tokenizer).__name__}"
    )


def _write_all(
    encoded: Iterator[_Encoded],
    writers: Mapping[str, TokenFileWriter],
    eod_id: int | None,
    bar: tqdm,
    log_interval: int,
) -> tuple[int, int, int, int]:
    """Write encoded documents; return (documents, empty documents, tokens, text bytes)."""
    documents = empty = tokens = text_bytes = 0
    for chunk, chunk_ids in encoded:
        for document, ids in zip(chunk, chunk_ids, strict=True):
            text_bytes += len(document.text.encode("utf-8"))
            if not ids:
                empty += 1
                continue
            if eod_id is not None:
                ids.append(eod_id)
            writers[document.key].add_document(ids)
            documents += 1
            tokens += len(ids)
        seen = documents + empty
        if seen // log_interval != (seen - len(chunk)) // log_interval:
            bar.set_postfix(tokens=tokens, MB=f"{text_bytes / 1e6:.1f}", refresh=False)
        bar.update(len(chunk))
    return documents, empty, tokens, text_bytes


def _chunked(documents: Iterator[Document], size: int) -> Iterator[_Chunk]:
    chunk: _Chunk = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encode_serial(chunks: Iterator[_Chunk], tokenizer: Tokenizer) -> _EncodedStream:
    for chunk in chunks:
        yield chunk, tokenizer.encode_batch([document.text for document in chunk])


def _encode_parallel(chunks: Iterator[_Chunk], spec: TokenizerSpec, workers: int) -> _EncodedStream:
    """Encode chunks in a spawned pool, a bounded number in flight, results in input order."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        pending: deque[tuple[_Chunk, AsyncResult[list[list[int]]]]] = deque()
        for chunk in chunks:
            texts = [document.text for document in chunk]
            pending.append((chunk, pool.apply_async(_encode_in_worker, (spec, texts))))
            if len(pending) >= workers * _CHUNKS_IN_FLIGHT_PER_WORKER:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


@functools.lru_cache(maxsize=4)
def _tokenizer_in_worker(spec: TokenizerSpec) -> Tokenizer:
    """Each worker process builds its tokenizer once, on its first chunk."""
    return spec.build()


def _encode_in_worker(spec: TokenizerSpec, texts: list[str]) -> list[list[int]]:
    return _tokenizer_in_worker(spec).encode_batch(texts)
