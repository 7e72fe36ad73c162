"""Corpus preprocessing: tokenize raw documents into GPT-NeoX ``{prefix}_{key}_document`` files.

With ``mask_before_token`` (GPT-NeoX's ``preprocess_data_with_mask.py``) a label file
``{prefix}_label_document`` (int32) is written beside the tokens, document for document: each
token's label is the token itself, except ``IGNORE_INDEX`` (-100, no loss) up to and including
the first occurrence of the token sequence in the document (a prompt's delimiter, such as the
tokens of "Answer:"). A document without it keeps every label. Training reads it through
``train_label_data_paths``.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from neox_data.corpus import Document, ReadStats, iter_documents, resolve_paths
from neox_data.dependency import MissingDependencyError, import_optional
from neox_data.gpt_dataset import IGNORE_INDEX
from neox_data.tiktoken_tokenizer import TiktokenEngine
from neox_data.token_file import TokenFileWriter, as_token_array, best_dtype, writing_together
from neox_data.tokenizer import Tokenizer, TokenizerSpec

logger = logging.getLogger(__name__)

# Documents sent to a worker process at a time, and chunks in flight per worker.
_CHUNK_SIZE = 64
_CHUNKS_IN_FLIGHT_PER_WORKER = 2
_ENGINE_SAMPLE_CHUNKS = 4  # chunks encoded both ways before the tiktoken engine is trusted
_ENGINE_SAMPLE_CHARS = 1 << 20  # ... or fewer: their first 2^20 characters (a serial cost)
TOKENIZER_ENGINES = ("auto", "hf", "tiktoken")
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a worker gets when the run ends

_Chunk = list[Document]


@dataclass(frozen=True)
class _Encoding:
    """How texts become token arrays, the same here and in worker processes."""

    dtype: str  # the token files' dtype
    eod_id: int | None  # appended to every non-empty document when set
    ftfy: bool


@dataclass(frozen=True)
class _EncodedChunk:
    tokens: np.ndarray  # the documents' tokens back to back, EOD included, in the token dtype
    lengths: np.ndarray  # (documents,) int64 tokens per document; 0: empty, skipped


_Encoded = tuple[_Chunk, _EncodedChunk]
_EncodedStream = Generator[_Encoded, None, None]


@dataclass(frozen=True)
class PreprocessResult:
    """What `preprocess` wrote. Document and token counts are summed over the JSON keys."""

    outputs: Mapping[str, Path]  # JSON key -> token file prefix (without .bin / .idx)
    documents: int  # documents written
    empty_documents: int  # documents with no tokens, counted and skipped
    tokens: int  # tokens written, end-of-document tokens included
    text_bytes: int  # UTF-8 bytes of text read
    seconds: float
    bad_lines: int = 0  # input lines skipped under skip_bad_lines
    invalid_utf8: int = 0  # lines or files whose invalid UTF-8 was replaced by U+FFFD
    engine: str = "hf"  # what encoded: the tokenizer itself ("hf") or "tiktoken"
    unmasked_documents: int | None = None  # with mask_before_token: documents without it

    @property
    def megabytes_per_second(self) -> float:
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        masked = (
            ""
            if self.unmasked_documents is None
            else f"{self.unmasked_documents} without the mask token(s), every label kept; "
        )
        return (
            f"{self.documents} documents ({self.empty_documents} empty, skipped), "
            f"{self.tokens} tokens, {masked}{self.bad_lines} bad lines skipped, "
            f"{self.invalid_utf8} with invalid UTF-8 replaced, "
            f"{self.megabytes_per_second:.2f} MB/s, {self.seconds:.1f} s ({self.engine} engine)"
        )


def output_prefix_for(output_prefix: str | Path, key: str) -> Path:
    """GPT-NeoX's name for the token file of one JSON key (and of the labels: key "label")."""
    return Path(f"{output_prefix}_{key}_document")


LABEL_KEY = "label"  # the label file's "key" in its name and in `PreprocessResult.outputs`


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
    skip_bad_lines: bool = False,
    ftfy: bool = False,
    tokenizer_engine: str = "auto",
    mask_before_token: Sequence[int] | None = None,
) -> PreprocessResult:
    """Tokenize every document of ``inputs`` into one token file per JSON key.

    ``num_docs`` is, as in GPT-NeoX, only the expected number of documents for the progress bar.
    With ``workers > 1`` documents are tokenized in spawned processes, each building its own
    tokenizer from a `TokenizerSpec` (pass one, or a tokenizer with a ``spec``, e.g.
    `HFTokenizer`); output order is input order either way. ``ftfy`` repairs mojibake with
    ``ftfy.fix_text`` before tokenizing (extra ``ftfy``). ``tokenizer_engine`` "auto" encodes
    byte-level BPE tokenizers with tiktoken when that gives the same ids (see `choose_engine`),
    "tiktoken" insists on it, "hf" never uses it. Nothing is written under the output names
    unless every input was read: see `writing_together`.
    """
    _check_options(jsonl_keys, workers, log_interval, tokenizer_engine)
    if ftfy:
        import_optional("ftfy", "ftfy", "--ftfy")  # fail before reading anything
    paths = resolve_paths(inputs)
    local = tokenizer.build() if isinstance(tokenizer, TokenizerSpec) else tokenizer
    pattern = _mask_pattern(mask_before_token, jsonl_keys, local.vocab_size)
    dtype = best_dtype(local.vocab_size)
    writers = {
        key: TokenFileWriter(output_prefix_for(output_prefix, key), dtype, overwrite=overwrite)
        for key in jsonl_keys
    }
    labels = None
    if pattern is not None:
        prefix = output_prefix_for(output_prefix, LABEL_KEY)
        labels = _LabelWriter(TokenFileWriter(prefix, np.int32, overwrite=overwrite), pattern)
    stats = ReadStats()
    documents = iter_documents(paths, jsonl_keys, skip_bad_lines=skip_bad_lines, stats=stats)
    chunks = _chunked(documents, _CHUNK_SIZE)
    first = list(itertools.islice(chunks, _ENGINE_SAMPLE_CHUNKS))
    local = choose_engine(local, tokenizer_engine, engine_sample(first, _ENGINE_SAMPLE_CHARS))
    encoding = _Encoding(dtype.str, local.eod_id if append_eod else None, ftfy)
    encoded = _encode(itertools.chain(first, chunks), local, encoding, workers)
    total = num_docs * len(jsonl_keys) if num_docs else None
    start = time.perf_counter()
    together = [*writers.values(), *([labels.writer] if labels else [])]
    with (
        writing_together(together),
        closing(encoded),
        _progress_bar(total, progress) as bar,
    ):
        if labels is not None:
            encoded = labels.tap(encoded)
        counts = _write_all(encoded, writers, bar, log_interval)
    outputs = {key: writer.prefix for key, writer in writers.items()}
    if labels is not None:
        outputs[LABEL_KEY] = labels.writer.prefix
    seconds = time.perf_counter() - start
    engine = "tiktoken" if isinstance(local, TiktokenEngine) else "hf"
    unmasked = labels.unmasked if labels is not None else None
    result = PreprocessResult(
        outputs, *counts, seconds, stats.bad_lines, stats.invalid_utf8, engine, unmasked
    )
    logger.info("%s", result.summary())
    return result


def engine_sample(chunks: Sequence[_Chunk], limit: int) -> list[Document]:
    """The documents of `chunks` the tiktoken engine is checked on: in order, while their text
    stays within `limit` characters (at least one). Both encoders run over them one after the
    other before any worker starts: on a small corpus an unbounded sample was most of the job
    (the first 256 of the standard library's 610 modules: 43% of its text, 2.2 of 3 s)."""
    sample: list[Document] = []
    size = 0
    for document in itertools.chain.from_iterable(chunks):
        if sample and size + len(document.text) > limit:
            break
        sample.append(document)
        size += len(document.text)
    return sample


def choose_engine(tokenizer: Tokenizer, requested: str, sample: Sequence[Document]) -> Tokenizer:
    """``tokenizer``, or its tiktoken engine when asked for ("tiktoken") or safe ("auto").

    The engine must give the same ids as ``tokenizer`` on every ``sample`` document. With
    "auto" any reason not to use it (no translation, tiktoken missing, a differing document)
    keeps ``tokenizer``; with "tiktoken" it is an error.
    """
    if requested == "hf" or isinstance(tokenizer, TiktokenEngine):
        return tokenizer
    try:
        engine = TiktokenEngine.wrap(tokenizer)
        for document in sample:
            if engine.encode(document.text) != tokenizer.encode(document.text):
                raise ValueError(
                    f"the tiktoken engine encodes {document.source}:{document.line} "
                    "differently from the tokenizer"
                )
    except (ValueError, MissingDependencyError) as err:
        if requested == "tiktoken":
            raise
        logger.info("encoding with the tokenizer itself, not tiktoken: %s", err)
        return tokenizer
    logger.info("encoding with tiktoken: same ids on the first %d documents", len(sample))
    return engine


def _encode(
    chunks: Iterator[_Chunk], tokenizer: Tokenizer, encoding: _Encoding, workers: int
) -> _EncodedStream:
    if workers == 1:
        return _encode_serial(chunks, tokenizer, encoding)
    return _encode_parallel(chunks, _spec_for_workers(tokenizer), encoding, workers)


def _check_options(jsonl_keys: Sequence[str], workers: int, log_interval: int, engine: str) -> None:
    if engine not in TOKENIZER_ENGINES:
        raise ValueError(f"tokenizer engine must be one of {TOKENIZER_ENGINES}, got {engine!r}")
    if not jsonl_keys:
        raise ValueError("at least one JSON key is needed (--jsonl-keys)")
    if len(set(jsonl_keys)) != len(jsonl_keys):
        raise ValueError(f"duplicate JSON keys in {list(jsonl_keys)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if log_interval < 1:
        raise ValueError(f"log_interval must be at least 1, got {log_interval}")


def _mask_pattern(
    tokens: Sequence[int] | None, jsonl_keys: Sequence[str], vocab_size: int
) -> np.ndarray | None:
    """The mask token sequence as an array, checked; None without one."""
    if tokens is None:
        return None
    pattern = np.asarray(list(tokens), dtype=np.int64)
    if pattern.size == 0:
        raise ValueError("mask_before_token needs at least one token id")
    if pattern.min() < 0 or pattern.max() >= vocab_size:
        raise ValueError(
            f"mask_before_token ids must be in 0..{vocab_size - 1} (the tokenizer's vocabulary), "
            f"got {pattern.tolist()}"
        )
    if len(jsonl_keys) != 1 or jsonl_keys[0] == LABEL_KEY:
        raise ValueError(
            f"mask_before_token writes one label file for one JSON key other than "
            f"{LABEL_KEY!r}; got --jsonl-keys {' '.join(jsonl_keys)}"
        )
    return pattern


def first_match_end(tokens: np.ndarray, pattern: np.ndarray) -> int:
    """The position just past the first occurrence of ``pattern`` in ``tokens``; 0 when none."""
    if len(tokens) < len(pattern):
        return 0
    windows = np.lib.stride_tricks.sliding_window_view(tokens, len(pattern))
    hits = np.flatnonzero((windows == pattern).all(axis=1))
    return int(hits[0]) + len(pattern) if len(hits) else 0


class _LabelWriter:
    """Writes each encoded document's labels as its tokens go by (`tap`)."""

    def __init__(self, writer: TokenFileWriter, pattern: np.ndarray) -> None:
        self.writer, self.pattern = writer, pattern
        self.unmasked = 0  # documents without the pattern

    def tap(self, encoded: Iterator[_Encoded]) -> _EncodedStream:
        for chunk, chunk_tokens in encoded:
            self.write(chunk_tokens)
            yield chunk, chunk_tokens

    def write(self, encoded: _EncodedChunk) -> None:
        labels = encoded.tokens.astype(np.int32)
        lengths = encoded.lengths[encoded.lengths > 0]
        start = 0
        for length in lengths.tolist():
            end = first_match_end(labels[start : start + length], self.pattern)
            labels[start : start + end] = IGNORE_INDEX
            self.unmasked += end == 0
            start += length
        self.writer.add_documents(labels, lengths)


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


def _progress_bar(total: int | None, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="docs", desc="tokenizing", file=sys.stderr, disable=not enabled)


def _write_all(
    encoded: Iterator[_Encoded],
    writers: Mapping[str, TokenFileWriter],
    bar: tqdm,
    log_interval: int,
) -> tuple[int, int, int, int]:
    """Write encoded documents in order; return (documents, empty documents, tokens, bytes)."""
    documents = empty = tokens = text_bytes = 0
    started = time.perf_counter()
    for chunk, chunk_tokens in encoded:
        _write_chunk(chunk, chunk_tokens, writers)
        text_bytes += sum(len(document.text.encode("utf-8")) for document in chunk)
        written = int(np.count_nonzero(chunk_tokens.lengths))
        documents, empty = documents + written, empty + len(chunk) - written
        tokens += len(chunk_tokens.tokens)
        seen = documents + empty
        if seen // log_interval != (seen - len(chunk)) // log_interval:
            elapsed = max(time.perf_counter() - started, 1e-9)
            tokens_per_second, megabytes_per_second = tokens / elapsed, text_bytes / 1e6 / elapsed
            rates = {"tokens/s": f"{tokens_per_second:.3g}", "MB/s": f"{megabytes_per_second:.3g}"}
            bar.set_postfix(rates, refresh=False)
        bar.update(len(chunk))
    return documents, empty, tokens, text_bytes


def _write_chunk(
    chunk: _Chunk, encoded: _EncodedChunk, writers: Mapping[str, TokenFileWriter]
) -> None:
    """Hand each run of same-key documents to its key's writer in one call."""
    ends = np.cumsum(encoded.lengths)
    run = 0
    for i in range(1, len(chunk) + 1):
        if i < len(chunk) and chunk[i].key == chunk[run].key:
            continue
        lengths = encoded.lengths[run:i]
        begin = int(ends[run] - lengths[0])
        tokens = encoded.tokens[begin : int(ends[i - 1])]
        writers[chunk[run].key].add_documents(tokens, lengths[lengths > 0])
        run = i


def _chunked(documents: Iterator[Document], size: int) -> Iterator[_Chunk]:
    chunk: _Chunk = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encode_serial(
    chunks: Iterator[_Chunk], tokenizer: Tokenizer, encoding: _Encoding
) -> _EncodedStream:
    for chunk in chunks:
        yield chunk, _encode_texts(tokenizer, [document.text for document in chunk], encoding)


def _encode_parallel(
    chunks: Iterator[_Chunk], spec: TokenizerSpec, encoding: _Encoding, workers: int
) -> _EncodedStream:
    """Encode chunks in spawned processes, a bounded number in flight, results in input order.

    Workers ignore SIGINT: Ctrl-C reaches this process, which stops them. A worker that dies
    (killed, out of memory) fails the run with BrokenProcessPool instead of hanging it. A run
    that ends early (Ctrl-C, an error, the stream closed) ends its workers at once: see
    `_abandon`.
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
    )
    finished = False
    try:
        pending: deque[tuple[_Chunk, Future[_EncodedChunk]]] = deque()
        for chunk in chunks:
            texts = [document.text for document in chunk]
            pending.append((chunk, pool.submit(_encode_in_worker, spec, texts, encoding)))
            if len(pending) >= workers * _CHUNKS_IN_FLIGHT_PER_WORKER:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _abandon(pool)


def _abandon(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Stop ``pool`` without waiting for the chunks in flight, whose results nobody will read.

    Queued chunks are cancelled and the workers terminated (killed after ``grace`` seconds);
    the executor's manager thread then reaps them, and this waits for it. A graceful
    ``shutdown(wait=True)`` here would wait for every running chunk, and relies on the
    executor's shutdown handshake, which an interrupt can catch half-way.
    """
    # Before Python 3.14 (`terminate_workers`) the workers and the manager thread are only
    # reachable through the executor's private attributes.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    stop_workers = getattr(pool, "terminate_workers", None)
    if stop_workers is not None:
        stop_workers()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
    # A sentinel is ready once its process has exited, whoever reaps it.
    running = {process.sentinel: process for process in processes}
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        ready = multiprocessing.connection.wait(list(running), deadline - time.monotonic())
        for sentinel in ready:
            running.pop(sentinel)
    for process in running.values():
        process.kill()
    if manager is not None:
        manager.join(grace)


def _start_worker(parent: int) -> None:
    """Workers leave Ctrl-C to the main process, end with it, and use one thread each (the
    processes are the parallelism; a Rust thread pool per worker would oversubscribe the cores)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _die_with(parent: int) -> None:
    """Have Linux kill this process when ``parent`` ends (parent-death signal): a run killed
    with SIGKILL leaves no worker behind (each holds its queue's pipe open, so would wait for
    work forever)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the run ended before the signal was arranged
        os._exit(1)


def _encode_texts(tokenizer: Tokenizer, texts: list[str], encoding: _Encoding) -> _EncodedChunk:
    if encoding.ftfy:
        fix_text = import_optional("ftfy", "ftfy", "--ftfy").fix_text
        texts = [fix_text(text) for text in texts]
    ids = tokenizer.encode_batch(texts)
    if encoding.eod_id is not None:
        for document in ids:
            if document:
                document.append(encoding.eod_id)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return _EncodedChunk(as_token_array(flat, np.dtype(encoding.dtype)), lengths)


@functools.lru_cache(maxsize=4)
def _tokenizer_in_worker(spec: TokenizerSpec) -> Tokenizer:
    """Each worker process builds its tokenizer once, on its first chunk."""
    return spec.build()


def _encode_in_worker(spec: TokenizerSpec, texts: list[str], encoding: _Encoding) -> _EncodedChunk:
    return _encode_texts(_tokenizer_in_worker(spec), texts, encoding)
