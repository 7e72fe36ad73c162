"""`from-hf`: a Hugging Face model directory -> a neox run directory to fine-tune from.

config.json gives the architecture (GPTNeoX, Llama, Mistral, Qwen2, Qwen3, OLMo 2, Gemma 2) and
the `ModelConfig`; the weights are renamed and fused by the architecture's key map, checked
tensor by tensor against the model the config describes, padded for the tensor-parallel layout
and written as neox-train's files (`checkpoint`). The tokenizer files are copied into the step
directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from neox_convert.checkpoint import SINGLE, check_state, write_import
from neox_convert.errors import ConversionError
from neox_convert.hf_files import hf_tokenizer, read_config, read_weights
from neox_convert.key_map import StateDict
from neox_convert.precision import Precision
from neox_convert.tokenizer_files import TokenizerFiles
from neox_convert.vocab import with_vocab
from neox_model import ModelConfig, ParallelDims

log = logging.getLogger(__name__)


def vocab_config(config: ModelConfig, rows: int, tokenizer: TokenizerFiles) -> ModelConfig:
    """The config with the tokenizer's vocabulary, padded by the rule that gives `rows` rows."""
    vocab = tokenizer.vocab_size()
    if vocab is None:
        vocab = rows
        log.info("vocabulary taken from the embedding: %d rows", rows)
    return with_vocab(config, vocab, rows)


def read_hf_model(directory: Path) -> tuple[ModelConfig, StateDict, TokenizerFiles]:
    """The neox config, neox-named full state dict and tokenizer files of a model directory."""
    arch, hf = read_config(directory)
    config = arch.model_config(hf)
    theirs = read_weights(directory)
    state = arch.from_hf(theirs, config)
    if not config.no_weight_tying:
        state.pop("embed_out.weight", None)  # some files repeat the tied output weight
    if "embed_in.weight" not in state:
        raise ConversionError(f"{directory}: the weights have no input embedding")
    rows = state["embed_in.weight"].shape[0]
    tokenizer = hf_tokenizer(directory)
    config = vocab_config(config, rows, tokenizer)
    check_state(state, config, rows, str(directory))
    return config, state, tokenizer


def import_from_hf(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    layout: ParallelDims = SINGLE,
    precision: Precision = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a GPTNeoX, Llama, Mistral, Qwen2, Qwen3, OLMo 2 or Gemma 2 directory into a neox
    run directory (step 0)."""
    read = read_hf_model
    return write_import("from-hf", input_dir, output_dir, read, layout, precision, overwrite)
