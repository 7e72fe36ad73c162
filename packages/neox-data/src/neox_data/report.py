"""What a token file holds, as ``neox-data inspect`` prints it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from neox_data.token_file import TokenFile
from neox_data.tokenizer import Tokenizer

_SCAN_CHUNK = 1 << 24  # tokens read at a time for the token statistics
_PREVIEW_CHARS = 500  # characters shown of each decoded document


def describe(token_file: TokenFile, tokenizer: Tokenizer | None = None, documents: int = 3) -> str:
    """Counts, dtype, size and token statistics, then the first ``documents`` documents.

    Documents are decoded with ``tokenizer`` when one is given, else shown as token ids.
    """
    lines = [*_summary(token_file), *_token_stats(token_file, tokenizer)]
    for number in range(min(documents, len(token_file.doc_idx) - 1)):
        lines.append(f"document {number}:")
        lines.append("  " + _preview(token_file, number, tokenizer))
    return "\n".join(lines)


def _summary(token_file: TokenFile) -> Iterator[str]:
    sizes = token_file.sizes
    size_bytes = token_file.bin_path.stat().st_size + token_file.idx_path.stat().st_size
    yield f"token file:  {token_file.prefix} (.bin + .idx: {size_bytes / 1e6:.1f} MB)"
    yield f"dtype:       {token_file.dtype.name}"
    yield f"documents:   {len(token_file.doc_idx) - 1}"
    yield f"sequences:   {len(sizes)}"
    yield f"tokens:      {token_file.num_tokens}"
    if len(sizes):
        p50, p90, p99 = np.percentile(sizes, [50, 90, 99])
        yield (
            f"sequence length: min {sizes.min()}, mean {sizes.mean():.1f}, median {p50:.0f}, "
            f"p90 {p90:.0f}, p99 {p99:.0f}, max {sizes.max()}; {int((sizes == 0).sum())} empty"
        )


def _token_stats(token_file: TokenFile, tokenizer: Tokenizer | None) -> Iterator[str]:
    tokens = token_file.tokens
    if len(tokens) == 0:
        return
    low, high, eod = np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0
    for start in range(0, len(tokens), _SCAN_CHUNK):
        chunk = np.asarray(tokens[start : start + _SCAN_CHUNK])
        low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
        if tokenizer is not None:
            eod += int((chunk == tokenizer.eod_id).sum())
    yield f"token ids:   {low}..{high}"
    if tokenizer is not None:
        yield f"end-of-document tokens: {eod} (id {tokenizer.eod_id})"
        if high >= tokenizer.vocab_size:
            yield f"WARNING: ids reach {high}, beyond the tokenizer's {tokenizer.vocab_size}"


def _preview(token_file: TokenFile, number: int, tokenizer: Tokenizer | None) -> str:
    first, last = int(token_file.doc_idx[number]), int(token_file.doc_idx[number + 1])
    parts = [token_file[i] for i in range(first, last)]
    ids = np.concatenate(parts).tolist() if parts else []
    if tokenizer is None:
        shown = " ".join(map(str, ids[:100]))
        return f"{len(ids)} tokens: {shown}" + (" ..." if len(ids) > 100 else "")
    text = tokenizer.decode(ids)
    cut = text[:_PREVIEW_CHARS] + (" ..." if len(text) > _PREVIEW_CHARS else "")
    return f"{len(ids)} tokens: {cut!r}"
