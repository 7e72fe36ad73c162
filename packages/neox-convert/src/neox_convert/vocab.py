"""The vocabulary rows of a checkpoint: the tokenizer's vocabulary plus padding.

neox pads the tokenizer's vocabulary to a multiple of `make_vocab_size_divisible_by` x the
tensor-parallel size (GPT-NeoX's rule), and neox-train rebuilds that number from the tokenizer, so
an imported model's padding must come out of the same rule. On import `padding_multiple` picks the
multiple that turns the tokenizer's vocabulary into exactly the rows the source model has; at a
larger tensor-parallel size the rule may ask for more rows, which are added as zeros
(`resize_rows`). On export the rows are cut back to the one-device padding, so the rows added for
tensor parallelism never leave neox.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from neox_convert.errors import ConversionError
from neox_model import ModelConfig

log = logging.getLogger(__name__)

VOCAB_TENSORS = ("embed_in.weight", "embed_out.weight")  # the neox tensors with a row per token
MAX_POWER_OF_TWO = 1 << 20


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padding_multiple(vocab: int, rows: int) -> int:
    """The smallest `make_vocab_size_divisible_by` that pads `vocab` tokens to exactly `rows`:
    a power of two where one does, else the smallest divisor of `rows` that does."""
    if not 0 < vocab <= rows:
        raise ConversionError(
            f"the tokenizer has {vocab} tokens but the model's embedding only {rows} rows"
        )
    multiple = 1
    while multiple <= min(rows, MAX_POWER_OF_TWO):
        if round_up(vocab, multiple) == rows:
            return multiple
        multiple *= 2
    divisor = next(d for d in range(rows - vocab + 1, rows + 1) if rows % d == 0)
    log.warning(
        "%d tokens padded to %d rows: make_vocab_size_divisible_by %d", vocab, rows, divisor
    )
    return divisor


def resize_rows(state: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """`state` with its vocabulary tensors cut or zero-padded to `rows` rows."""
    out = dict(state)
    for name in VOCAB_TENSORS:
        if name not in out:
            continue
        tensor = out[name]
        if tensor.shape[0] > rows:
            out[name] = tensor[:rows].clone()
        elif tensor.shape[0] < rows:
            padding = tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])
            out[name] = torch.cat([tensor, padding])
    return out


def with_vocab(config: ModelConfig, vocab: int, rows: int) -> ModelConfig:
    """`config` whose one-device padding of `vocab` tokens is exactly `rows` rows."""
    return dataclasses.replace(
        config, vocab_size=vocab, make_vocab_size_divisible_by=padding_multiple(vocab, rows)
    )
