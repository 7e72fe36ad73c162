"""Writing a neox checkpoint that neox-train fine-tunes from, at any tensor/pipeline layout.

    OUT/latest                  "global_stepN", written last
    OUT/global_stepN/files.json every file of the step with its size and checksum
                     model.json the manifest (neox_model.write_manifest)
                     config.yml the run config's model, tokenizer and layout keys
                     tokenizer files, under their own names
                     DeepSpeed's model files, by layout:
      no pipeline:   mp_rank_TT_model_states.pt per tensor rank T: {"module": T's state dict, ...}
      pipeline:      layer_LL-model_TT-model_states.pt per layer L and tensor rank T, holding the
                     layer's own state dict (layer 0 embedding, 1..N blocks as "block.*", N+1 final
                     norm, N+2 output), and mp_rank_MM_model_states.pt per pipeline x tensor rank
                     M with {"module": None, ...}, which DeepSpeed's loader opens first.

Only model weights are written (no optimizer state): neox-train loads them with
`finetune: true`, which the written config sets. A tensor rank's shard of each parameter is
the slice neox-model's layers hold (`shard_spec`), so `load_state_dict` joins them back.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from neox_convert.errors import ConversionError
from neox_convert.key_map import DERIVED, StateDict
from neox_convert.precision import Precision, cast, resolve_dtype
from neox_convert.staging import check_destination, staged_directory
from neox_convert.tokenizer_files import TokenizerFiles
from neox_convert.vocab import resize_rows
from neox_model import (
    ModelConfig,
    ModelManifest,
    ParallelDims,
    TPGroup,
    Transformer,
    WeightFile,
    layer_file_name,
    layer_name_map,
    model_file_name,
    pipeline_layer,
    shard,
    tensor_parallel_specs,
    write_manifest,
)
from neox_model.checkpoint import RUN_CONFIG, seal_step, write_latest

log = logging.getLogger(__name__)

FINETUNE_NOTE = (
    "model weights only (no optimizer state): neox train fine-tunes from them (finetune: true).\n"
    "Add your data and schedule in a later file, which wins: neox train this.yml yours.yml\n"
    "(optimizer and train_iters below are placeholders)"
)
# what a run config needs beyond the model to be valid: placeholders for the user's own values
# (neox train IMPORTED/config.yml yours.yml: later files win)
TRAINING_PLACEHOLDERS: dict[str, Any] = {
    "optimizer": {"type": "Adam", "params": {"lr": 1.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8}},
    "train_iters": 1000,
}


def check_split(layout: ParallelDims, config: ModelConfig) -> None:
    """Refuse a layout the model's weights cannot be split into, saying why (the data-parallel
    size plays no part in how weights are written)."""
    if layout.pipe > config.num_layers + 3:
        raise ConversionError(f"{layout.pipe} pipeline stages for {config.num_layers + 3} layers")
    shard_specs(config, layout.tensor)  # raises when heads or widths do not divide


SINGLE = ParallelDims()  # one tensor rank, no pipeline


def check_state(state: StateDict, config: ModelConfig, rows: int, source: str) -> None:
    """Every tensor the config's model has, of its shape, and no other ("mismatched config")."""
    with torch.device("meta"):
        expected = Transformer(config, padded_vocab=rows).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ConversionError(
            f"{source} and its config disagree: the config's model has "
            f"{', '.join(missing[:4]) or 'nothing'} missing from the weights and the weights "
            f"have {', '.join(extra[:4]) or 'nothing'} it lacks"
        )
    for name, meta in expected.items():
        if state[name].shape != meta.shape:
            raise ConversionError(
                f"{source}: {name} is {tuple(state[name].shape)} in the weights but "
                f"{tuple(meta.shape)} in the model its config describes"
            )


def shard_specs(config: ModelConfig, tensor_parallel: int) -> dict[str, tuple[int, int]]:
    """(dim, chunks) of every parameter split over tensor-parallel ranks."""
    try:
        return tensor_parallel_specs(config, tensor_parallel)
    except ValueError as err:
        raise ConversionError(
            f"cannot split this model over {tensor_parallel} tensor-parallel ranks: {err}"
        ) from err


def rank_states(state: StateDict, config: ModelConfig, tensor_parallel: int) -> list[StateDict]:
    """Every tensor-parallel rank's state dict of a full one (vocabulary padded for the layout)."""
    state = resize_rows(state, config.padded_vocab(tensor_parallel))
    specs = shard_specs(config, tensor_parallel)
    return [
        {
            name: shard(t, TPGroup(None, rank, tensor_parallel), *specs[name])
            if name in specs
            else t
            for name, t in state.items()
        }
        for rank in range(tensor_parallel)
    ]


def deepspeed_states(module: StateDict | None, tensor_parallel: int) -> dict[str, Any]:
    """A DeepSpeed model-states file holding weights only (what `load_module_only` reads)."""
    return {
        "module": module,
        "dp_world_size": 1,
        "mp_world_size": tensor_parallel,
        "global_steps": 0,
        "global_samples": 0,
        "skipped_steps": 0,
    }


def _module_files(step_dir: Path, ranks: list[StateDict]) -> list[WeightFile]:
    files = []
    for rank, state in enumerate(ranks):
        name = model_file_name(rank)
        torch.save(deepspeed_states(state, len(ranks)), step_dir / name)
        files.append(WeightFile(name, "module", rank))
    return files


def _layer_files(
    step_dir: Path, ranks: list[StateDict], config: ModelConfig, stages: int
) -> list[WeightFile]:
    files = []
    # a tied output layer runs on a copy of the embedding that neox-train's engine makes from
    # the first stage's at load (and does not save): it has no file of its own
    layers = config.num_layers + (3 if config.no_weight_tying else 2)
    for layer in range(layers):
        local, model = layer_name_map(config, layer)
        for rank, state in enumerate(ranks):
            own = {
                local + name[len(model) :]: t
                for name, t in state.items()
                if pipeline_layer(name, config) == layer and name not in DERIVED
            }
            name = layer_file_name(layer, rank)
            torch.save(own, step_dir / name)
            files.append(WeightFile(name, "", rank, local, model))
    for rank in range(stages * len(ranks)):
        torch.save(deepspeed_states(None, stages * len(ranks)), step_dir / model_file_name(rank))
    return files


def write_step(
    step_dir: Path,
    config: ModelConfig,
    state: StateDict,
    layout: ParallelDims,
    tokenizer: TokenizerFiles,
) -> ModelManifest:
    """The model files and manifest of one step directory (which must exist, holding the
    tokenizer's files under their own names)."""
    ranks = rank_states(state, config, layout.tensor)
    if layout.pipe == 1:
        files = _module_files(step_dir, ranks)
    else:
        files = _layer_files(step_dir, ranks, config, layout.pipe)
    manifest = ModelManifest(
        config,
        tuple(files),
        layout.tensor,
        tokenizer=tokenizer.vocab.name if tokenizer.vocab else None,
        tokenizer_type=tokenizer.kind,
        merge_file=tokenizer.merges.name if tokenizer.merges else None,
    )
    write_manifest(step_dir, manifest)
    return manifest


def run_config(
    config: ModelConfig, layout: ParallelDims, run_dir: Path, tokenizer: dict[str, Any]
) -> dict[str, Any]:
    """A GPT-NeoX-style run config for fine-tuning from the checkpoint in `run_dir`."""
    model = {k: v for k, v in config.to_dict().items() if k != "vocab_size"}
    return {
        **json.loads(json.dumps(model)),  # tuples (attention_config) as YAML lists
        **tokenizer,
        "model_parallel_size": layout.tensor,
        "pipe_parallel_size": layout.pipe,
        "load": str(run_dir),
        "save": str(run_dir),
        "finetune": True,
        **TRAINING_PLACEHOLDERS,
    }


def write_run_config(path: Path, values: dict[str, Any], header: str) -> None:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(values, sort_keys=False))


@dataclass(frozen=True)
class Destination:
    """Where a converted checkpoint goes: built in `staging`, read later from `final`."""

    staging: Path
    final: Path
    step: str = "global_step0"


def write_checkpoint(
    dest: Destination,
    config: ModelConfig,
    state: StateDict,
    layout: ParallelDims,
    tokenizer: TokenizerFiles,
    run_values: dict[str, Any],
    header: str,
) -> ModelManifest:
    """The step of a run directory: weights, manifest, tokenizer files, config.yml with
    `run_values` under a `header` comment (`finish_run` completes it)."""
    step_dir = dest.staging / dest.step
    step_dir.mkdir()
    for path in tokenizer.files:
        shutil.copyfile(path, step_dir / path.name)
    manifest = write_step(step_dir, config, state, layout, tokenizer)
    write_run_config(step_dir / RUN_CONFIG, run_values, header)
    return manifest


def finish_run(dest: Destination) -> None:
    """files.json for everything in the step (written last), then `latest`."""
    step_dir = dest.staging / dest.step
    write_latest(dest.staging, seal_step(step_dir).parent)


Imported = tuple[ModelConfig, StateDict, TokenizerFiles]  # what an importer reads


def write_import(
    command: str,
    input_dir: str | Path,
    output_dir: str | Path,
    read: Callable[[Path], Imported],
    layout: ParallelDims,
    precision: Precision,
    overwrite: bool,
) -> Path:
    """`neox-convert COMMAND`: the model `read` finds in `input_dir` as a run directory (step 0)
    at `layout`, in `precision`, with a config.yml for fine-tuning. Written whole or not at all;
    `overwrite` replaces a previous output (`staging`)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_destination(output_dir, overwrite, input_dir)
    config, state, tokenizer = read(input_dir)
    source = f"neox-convert {command} {input_dir.resolve()}"
    check_split(layout, config)
    state = cast(state, resolve_dtype(precision, state))
    with staged_directory(output_dir) as staging:
        dest = Destination(staging, output_dir.resolve())
        keys = tokenizer.run_keys(dest.final / dest.step)
        values = run_config(config, layout, dest.final, keys)
        header = f"{source}\n{FINETUNE_NOTE}"
        write_checkpoint(dest, config, state, layout, tokenizer, values, header)
        finish_run(dest)
    log.info("%s -> %s (%s)", source, output_dir, layout)
    return output_dir
