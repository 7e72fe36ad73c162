"""`to-hf`: write a checkpoint as a Hugging Face model directory, atomically.

The directory (config.json, model.safetensors or its shards, generation_config.json, tokenizer
files) is built under a temporary name beside the destination and renamed into place only when
complete. The vocabulary is written padded as for one device (`vocab`): rows a tensor-parallel
layout added are dropped.

The model comes from the checkpoint's model.json, and so does the Hugging Face architecture
unless one is named: the first of `ARCHITECTURES` that reproduces the model exactly (GPTNeoX,
Llama, Mistral, Qwen2, Qwen3, OLMo 2, Gemma 2). `config_files` (GPT-NeoX's `--config_file`: the
run's YAML files) are checked against the model, every architecture key they set must agree,
and name the tokenizer when the checkpoint holds none.

A reward model (`value_head`, trained with train_impl rm) is written as the family's
`...ForSequenceClassification` with one label (GPTNeoX, Llama, Mistral): the same body, its
`score` head in place of the output layer, pad_token_id the end-of-document token (transformers
reads the score at the last token before the first pad token, or at the last token).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from neox_convert.architecture import (
    ARCHITECTURES,
    Architecture,
    ArchitectureName,
    architecture_for,
)
from neox_convert.errors import ConversionError, ExportError
from neox_convert.gpt_neox_checkpoint import model_config, read_yaml
from neox_convert.hf_files import MAX_SHARD_BYTES, hf_tokenizer, write_weights
from neox_convert.key_map import StateDict
from neox_convert.precision import Precision, cast, resolve_dtype
from neox_convert.staging import check_destination, staged_directory
from neox_convert.vocab import resize_rows
from neox_model import ModelConfig, load_state_dict

log = logging.getLogger(__name__)

# the families whose ...ForSequenceClassification a reward model exports as
SEQUENCE_CLASSIFICATION = {
    "neox": "GPTNeoXForSequenceClassification",
    "llama": "LlamaForSequenceClassification",
    "mistral": "MistralForSequenceClassification",
}

EOD_TOKEN = "<|endoftext|>"  # GPT-NeoX's end-of-document token
# The end-of-document tokens of tokenizer.json files, the first in the vocabulary wins, as
# neox-data reads them (neox_data.HF_EOD_TOKENS): GPT-NeoX's and Qwen's, Llama 3's, then </s>.
EOD_TOKENS = (EOD_TOKEN, "<|end_of_text|>", "</s>")


def export_to_hf(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    precision: Precision = "auto",
    architecture: ArchitectureName | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    config_files: Sequence[str | Path] = (),
) -> Path:
    """Export the checkpoint (step or run directory) to `output_dir` as `architecture` (None:
    the first that reproduces it exactly); returns the directory."""
    output_dir = Path(output_dir)
    check_destination(output_dir, overwrite, Path(checkpoint))
    step_dir, manifest, state = load_state_dict(checkpoint)
    values = read_yaml([Path(p) for p in config_files]) if config_files else {}
    if values:
        check_config(values, manifest.config, config_files)
    body = dataclasses.replace(manifest.config, value_head=False)  # what the families check
    if architecture is None:
        arch = architecture_for(body)
    else:
        arch = ARCHITECTURES[architecture]
        arch.check_exportable(body)
    if manifest.config.value_head and arch.name not in SEQUENCE_CLASSIFICATION:
        raise ExportError(
            f"a reward model (value_head) exports as a ...ForSequenceClassification: "
            f"{', '.join(SEQUENCE_CLASSIFICATION.values())}; {arch.family} is not one of these "
            "here"
        )
    dtype = resolve_dtype(precision, state)
    state = resize_rows(state, manifest.config.padded_vocab_size)
    tokenizer_file = step_dir / manifest.tokenizer if manifest.tokenizer else None
    if tokenizer_file is None and values.get("vocab_file"):
        tokenizer_file = Path(values["vocab_file"])
        if not tokenizer_file.is_file():
            raise ConversionError(f"the config's vocab_file {tokenizer_file} is not a file")
    with staged_directory(output_dir) as staging:
        special_ids = _write_tokenizer(tokenizer_file, staging) if tokenizer_file else (None, None)
        _write_model(arch, manifest.config, state, dtype, special_ids, staging, max_shard_bytes)
    log.info("exported %s to %s (%s, %s)", step_dir, output_dir, arch.hf_class, dtype)
    return output_dir


def check_config(
    values: dict[str, object], config: ModelConfig, files: Sequence[str | Path]
) -> None:
    """Every architecture key the YAML files set must be the checkpoint's (model.json)."""
    given = model_config(values, gpt_neox=False)
    keys = {f.name for f in dataclasses.fields(ModelConfig)} & set(values) - {"vocab_size"}
    if "mlp_type" in values:
        keys.add("activation")  # GPT-NeoX's mlp_type llama is a gated activation here
    wrong = [
        f"{k}: {getattr(given, k)!r} in the config, {getattr(config, k)!r} in the checkpoint"
        for k in sorted(keys)
        if getattr(given, k) != getattr(config, k)
    ]
    if wrong:
        names = ", ".join(str(f) for f in files)
        raise ConversionError(f"{names} does not describe this checkpoint: " + "; ".join(wrong))


def _write_model(
    arch: Architecture,
    config: ModelConfig,
    state: StateDict,
    dtype: torch.dtype,
    special_ids: tuple[int | None, int | None],
    out: Path,
    max_shard_bytes: int,
) -> None:
    """config.json and generation_config.json name `special_ids` (BOS, EOD; the BOS is the EOD
    where the tokenizer has none, as GPT-NeoX's and Qwen's configs say), then the weights."""
    from transformers import GenerationConfig

    bos_id, eod_id = special_ids
    bos_id = eod_id if bos_id is None else bos_id
    hf_config = arch.hf_config(config, eod_id, dtype, config.padded_vocab_size)
    hf_config.bos_token_id = bos_id
    if config.value_head:  # a reward model
        state = dict(state)
        score = state.pop("score.weight")
        hf_config.architectures = [SEQUENCE_CLASSIFICATION[arch.name]]
        hf_config.num_labels = 1
        hf_config.pad_token_id = eod_id
        hf_config.tie_word_embeddings = False  # no output layer to tie
        weights = {**arch.to_hf(state, config), "score.weight": score}
    else:
        weights = arch.to_hf(state, config)
    hf_config.save_pretrained(out)
    if not config.value_head:
        GenerationConfig(bos_token_id=bos_id, eos_token_id=eod_id).save_pretrained(out)
    write_weights(cast(weights, dtype), out, max_shard_bytes)


def _write_tokenizer(tokenizer_file: Path, out: Path) -> tuple[int | None, int | None]:
    """Save the tokenizer as a fast HF tokenizer; returns its (BOS, end-of-document) ids.
    Files that came from a Hugging Face directory (with their tokenizer_config.json) are copied
    as they are. A bare tokenizer.json gets the tokenizer_config.json its family's has:
    eos_token the end of document (the first of `EOD_TOKENS` it holds), bos_token the token its
    post-processor puts before every text (Llama 3's <|begin_of_text|>), else the end of
    document (GPT-NeoX's)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (tokenizer_file.parent / "tokenizer_config.json").is_file():
        for path in hf_tokenizer(tokenizer_file.parent).files:
            shutil.copyfile(path, out / path.name)
        copied = AutoTokenizer.from_pretrained(out)
        return copied.bos_token_id, copied.eos_token_id

    try:
        backend = Tokenizer.from_file(str(tokenizer_file))
    except Exception:
        log.warning("tokenizer %s is not a tokenizer.json: exported without one", tokenizer_file)
        return None, None
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    vocab = backend.get_vocab()
    eod = next((token for token in EOD_TOKENS if token in vocab), None)
    added = backend.encode("")  # the post-processor's tokens alone, marked special
    bos = backend.id_to_token(added.ids[0]) if added.special_tokens_mask[:1] == [1] else eod
    if eod is not None:
        tokenizer.eos_token = eod
    if bos is not None:
        tokenizer.bos_token = bos
    tokenizer.save_pretrained(out)
    return tokenizer.bos_token_id, tokenizer.eos_token_id
