"""Preprocessing: jsonl in, GPT-NeoX-named token files out; serial and worker processes agree."""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from neox_data import HFTokenizer, MissingDependencyError, TokenFile, TokenizerSpec, preprocess
from neox_data.preprocess import _abandon


def test_writes_one_token_file_per_key_with_eod(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, make_texts
) -> None:
    texts = make_texts(20)
    records = [{"text": t, "title": t.upper()} for t in texts]
    records[5]["text"] = ""  # empty documents are counted and skipped
    corpus = write_jsonl(tmp_path / "corpus.jsonl", records)
    result = preprocess(
        corpus,
        tmp_path / "out" / "data",
        tokenizer,
        jsonl_keys=("text", "title"),
        append_eod=True,
        progress=False,
    )
    assert result.outputs == {
        "text": tmp_path / "out" / "data_text_document",
        "title": tmp_path / "out" / "data_title_document",
    }
    assert result.empty_documents == 1
    assert result.documents == 39
    assert result.text_bytes == sum(
        len(t.encode()) for t in texts + [t.upper() for t in texts]
    ) - len(texts[5].encode())
    for key, prefix in result.outputs.items():
        tokens = TokenFile(prefix)
        assert tokens.dtype == np.uint16
        expected = [r[key] for r in records if r[key]]
        assert len(tokens) == len(expected)
        for i, text in enumerate(expected):
            assert tokens[i].tolist() == [*tokenizer.encode(text), tokenizer.eod_id]
    assert result.tokens == sum(TokenFile(p).num_tokens for p in result.outputs.values())


def test_without_append_eod_documents_are_just_their_tokens(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "the lazy dog"}])
    result = preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    assert TokenFile(result.outputs["text"])[0].tolist() == tokenizer.encode("the lazy dog")


def test_worker_processes_give_byte_identical_output(
    tmp_path: Path, tokenizer_path: Path, write_jsonl, make_texts
) -> None:
    # Enough documents for several chunks in flight per worker.
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in make_texts(700, seed=3)])
    spec = TokenizerSpec("HFTokenizer", str(tokenizer_path))
    serial = preprocess(corpus, tmp_path / "serial", spec, append_eod=True, progress=False)
    parallel = preprocess(
        corpus, tmp_path / "parallel", spec, append_eod=True, workers=2, progress=False
    )
    assert (serial.documents, serial.tokens) == (parallel.documents, parallel.tokens)
    for suffix in (".bin", ".idx"):
        serial_bytes = Path(f"{serial.outputs['text']}{suffix}").read_bytes()
        assert serial_bytes == Path(f"{parallel.outputs['text']}{suffix}").read_bytes()


def test_workers_need_a_tokenizer_they_can_rebuild(tmp_path: Path, tokenizer, write_jsonl) -> None:
    class Opaque:
        eod_id = 0
        vocab_size = tokenizer.vocab_size
        encode = tokenizer.encode
        encode_batch = tokenizer.encode_batch
        decode = tokenizer.decode

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="TokenizerSpec"):
        preprocess(corpus, tmp_path / "d", Opaque(), workers=2, progress=False)


def test_existing_output_is_refused_before_reading(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "first"}])
    preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    write_jsonl(corpus, [{"text": "second"}])
    with pytest.raises(FileExistsError, match=r"d_text_document\.bin"):
        preprocess(corpus, tmp_path / "d", tokenizer, progress=False)
    result = preprocess(corpus, tmp_path / "d", tokenizer, overwrite=True, progress=False)
    assert TokenFile(result.outputs["text"])[0].tolist() == tokenizer.encode("second")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_line_leaves_no_output(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, make_texts, workers: int
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in make_texts(300)])
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write("{broken\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"c\.jsonl:301: malformed JSON"):
        preprocess(corpus, out / "d", tokenizer, workers=workers, progress=False)
    assert list(out.iterdir()) == []
    assert multiprocessing.active_children() == []  # the workers ended with the run


def test_an_abandoned_pool_does_not_wait_for_the_chunks_in_flight() -> None:
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    running = pool.submit(time.sleep, 300)  # would hold a graceful shutdown for 5 minutes
    deadline = time.monotonic() + 60
    while not running.running():  # handed to the worker: cancelling it no longer works
        assert time.monotonic() < deadline, "the chunk never reached the worker"
        time.sleep(0.01)
    workers = list(pool._processes.values())
    start = time.monotonic()
    _abandon(pool)
    assert time.monotonic() - start < 120
    assert workers and not any(worker.is_alive() for worker in workers)
    with pytest.raises((BrokenProcessPool, CancelledError)):
        running.result(timeout=60)


def test_skip_bad_lines_counts_them_and_keeps_the_rest(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "one"}, {"text": "two"}])
    with corpus.open("ab") as handle:
        handle.write(b'{"text": "thr\xffee"}\n{broken\n{"other": 1}\n{"text": ""}\n')
    result = preprocess(corpus, tmp_path / "d", tokenizer, skip_bad_lines=True, progress=False)
    assert (result.documents, result.bad_lines, result.invalid_utf8) == (3, 2, 1)
    assert result.empty_documents == 1
    tokens = TokenFile(result.outputs["text"])
    assert [tokenizer.decode(tokens[i].tolist()) for i in range(3)] == ["one", "two", "thr\ufffdee"]
    assert "2 bad lines skipped, 1 with invalid UTF-8 replaced" in result.summary()


def test_ftfy_repairs_mojibake_before_tokenizing(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    pytest.importorskip("ftfy")
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "cafÃ© dÃ©jÃ  vu"}])
    for workers in (1, 2):
        prefix = tmp_path / f"w{workers}"
        result = preprocess(
            corpus, prefix, tokenizer.spec, ftfy=True, workers=workers, progress=False
        )
        assert tokenizer.decode(TokenFile(result.outputs["text"])[0].tolist()) == "café déjà vu"


def test_ftfy_without_the_package_names_the_extra(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, monkeypatch
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    monkeypatch.setitem(sys.modules, "ftfy", None)
    with pytest.raises(MissingDependencyError, match=r"--ftfy needs .*neox-data\[ftfy\]"):
        preprocess(corpus, tmp_path / "d", tokenizer, ftfy=True, progress=False)
    assert list(tmp_path.iterdir()) == [corpus]


def test_several_keys_are_published_together_or_not_at_all(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "title": "b"}])
    out = tmp_path / "out"
    out.mkdir()
    # The title output appears while the run goes: the text output must not be published alone.
    blocker = out / "d_title_document.idx"

    def encode_batch_and_block(texts):
        blocker.write_text("someone else's file")
        return tokenizer.encode_batch(texts)

    class Racing:
        eod_id, vocab_size, decode = tokenizer.eod_id, tokenizer.vocab_size, tokenizer.decode
        encode, encode_batch = tokenizer.encode, staticmethod(encode_batch_and_block)

    with pytest.raises(FileExistsError, match=r"d_title_document\.idx"):
        preprocess(corpus, out / "d", Racing(), jsonl_keys=("text", "title"), progress=False)
    assert [p.name for p in out.iterdir()] == [blocker.name]


@pytest.mark.parametrize("tokenizer_type", ["CharLevelTokenizer", "GPT2BPETokenizer"])
def test_other_tokenizer_types_round_trip_through_token_files(
    tmp_path: Path, write_jsonl, varied_texts, gpt2_files, tokenizer_type: str
) -> None:
    texts = [t for t in varied_texts if t]
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    vocab, merges = (str(p) for p in gpt2_files)
    spec = (
        TokenizerSpec(tokenizer_type)
        if tokenizer_type == "CharLevelTokenizer"
        else TokenizerSpec(tokenizer_type, vocab, merges)
    )
    result = preprocess(corpus, tmp_path / "d", spec, append_eod=True, workers=2, progress=False)
    tokens, tokenizer = TokenFile(result.outputs["text"]), spec.build()
    assert tokens.dtype == np.uint16
    for i, text in enumerate(texts):
        ids = tokens[i].tolist()
        assert ids[-1] == tokenizer.eod_id
        assert tokenizer.decode(ids[:-1]) == text


def _expected_labels(tokens: list[int], pattern: list[int]) -> list[int]:
    """GPT-NeoX's mask, computed here by a plain scan: -100 through the first match."""
    for start in range(len(tokens) - len(pattern) + 1):
        if tokens[start : start + len(pattern)] == pattern:
            end = start + len(pattern)
            return [-100] * end + tokens[end:]
    return list(tokens)


def preprocess_masked(tmp_path, write_jsonl, texts, tokenizer, pattern, **options):
    """`texts` written as tmp_path/c.jsonl and preprocessed to tmp_path/d with an EOD after each
    document, the labels before `pattern` masked."""
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    return preprocess(
        corpus,
        tmp_path / "d",
        tokenizer,
        append_eod=True,
        mask_before_token=pattern,
        progress=False,
        **options,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_mask_before_token_writes_labels_in_step_with_the_tokens(
    tmp_path: Path, tokenizer_path: Path, write_jsonl, make_texts, workers: int
) -> None:
    spec = TokenizerSpec("HFTokenizer", str(tokenizer_path))
    tokenizer = spec.build()
    pattern = tokenizer.encode(" Answer:")
    texts = [f"Question: {t} Answer: {t[::-1]}" for t in make_texts(150, seed=5)]
    texts[3] = "no delimiter in this one"
    texts[7] = f"{texts[7]} Answer: again"  # only the first occurrence counts
    result = preprocess_masked(tmp_path, write_jsonl, texts, spec, pattern, workers=workers)
    assert result.outputs["label"] == tmp_path / "d_label_document"
    tokens, labels = TokenFile(result.outputs["text"]), TokenFile(result.outputs["label"])
    assert labels.dtype == np.int32 and len(labels) == len(tokens) == len(texts)
    masked_documents = 0
    for i in range(len(tokens)):
        expected = _expected_labels(tokens[i].tolist(), pattern)
        assert labels[i].tolist() == expected, i
        masked_documents += expected[0] == -100
    assert labels[3].tolist() == tokens[3].tolist()  # no delimiter: every label kept
    kept = labels[7] != -100  # the second " Answer:" keeps its labels
    assert tokenizer.decode(tokens[7][kept].tolist()).count(" Answer:") == 1
    assert result.unmasked_documents == len(texts) - masked_documents >= 1
    assert "without the mask token(s)" in result.summary()


def test_mask_labels_are_read_by_the_dataset(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl
) -> None:
    from neox_data import IGNORE_INDEX, GPTDataset

    pattern = tokenizer.encode(" Answer:")
    texts = ["Question: the fox? Answer: the dog.", "Question: a café? Answer: déjà vu."]
    result = preprocess_masked(tmp_path, write_jsonl, texts, tokenizer, pattern)
    tokens = TokenFile(result.outputs["text"])
    dataset = GPTDataset(
        tokens,
        np.arange(2),
        num_samples=2,
        seq_length=4 * max(tokens.sizes),
        seed=1,
        pack_impl="unpacked",
        labels=TokenFile(result.outputs["label"]),
        cache=False,
    )
    for index in range(2):
        sample, labels = dataset[index], dataset.labels(index)
        kept = labels != IGNORE_INDEX
        answer = tokenizer.decode(sample[kept].tolist())
        assert answer in (" the dog.<|endoftext|>", " déjà vu.<|endoftext|>"), answer


@pytest.mark.parametrize(
    ("keys", "pattern", "message"),
    [
        (("text", "title"), [5], "one label file for one JSON key"),
        (("label",), [5], "one label file for one JSON key other than 'label'"),
        (("text",), [], "at least one token id"),
        (("text",), [1, 100_000], r"ids must be in 0\.\.319"),
    ],
)
def test_mask_before_token_is_checked_before_anything_is_written(
    tmp_path: Path, tokenizer: HFTokenizer, write_jsonl, keys, pattern, message
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{key: "the dog" for key in keys}])
    with pytest.raises(ValueError, match=message):
        preprocess(
            corpus,
            tmp_path / "out" / "d",
            tokenizer,
            jsonl_keys=keys,
            mask_before_token=pattern,
            progress=False,
        )
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
