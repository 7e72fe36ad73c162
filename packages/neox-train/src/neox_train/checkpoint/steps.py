"""Checkpoints: one directory per step, DeepSpeed's engine state plus neox's metadata.

    SAVE/global_step{N}/   .neox_save (written first: marks a step neox-train writes)
                           DeepSpeed files: mp_rank_XX_model_states.pt per tensor-parallel rank
                           (or layer_LL-model_XX-model_states.pt per pipeline layer), optimizer
                           shards; with ZeRO-3 also consolidated_model_states.pt
                           model.json (architecture + which file holds which weights),
                           layout.json (the layout, and which files hold each rank's state),
                           config.yml (the resolved run config), tokenizer file, neox_state.json
                           files.json (size and CRC-32 of every file above), written last
    SAVE/latest            "global_step{N}", written after files.json, atomically

The format's names and rules belong to `neox_model.checkpoint`; this module saves and loads the
engine. A step without files.json is incomplete and never read, so a crash mid-save leaves the
previous checkpoint in force. A run at the saved layout resumes through DeepSpeed; a run at
another reads the step through layout.json (`neox_train.checkpoint.relayout`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from neox_model import (
    EngineLayout,
    ModelConfig,
    ModelManifest,
    SavedLayout,
    TPGroup,
    WeightFile,
    layer_name_map,
    read_layout,
    read_manifest,
    write_layout,
    write_manifest,
)
from neox_model.checkpoint import (
    CONSOLIDATED,
    LAYER_FILE,
    MODEL_FILE,
    RUN_CONFIG,
    SAVING,
    STATE_FILE,
    CheckpointError,
    FileRecord,
    complete_steps,
    damaged,
    is_complete,
    raise_if_disk_full,
    record_files,
    seal_step,
    step_files,
    step_tag,
    write_atomic,
    write_latest,
)
from neox_train.checkpoint.relayout import describe_rank, load_relayout, saved_layout
from neox_train.engine.deepspeed_internals import zero3_whole_weights
from neox_train.engine.schedule import Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedStep:
    iteration: int
    consumed_samples: int
    schedule: Schedule | None = None  # the LR schedule the run followed (None: not recorded)
    # train_impl dpo and kto: where the frozen reference's weights come from, "init" (the seeded
    # initialisation) or a step directory (None: not a DPO step, or not recorded)
    reference: str | None = None


def save(
    engine: Any,
    save_dir: str | Path,
    iteration: int,
    *,
    state: SavedStep,
    config: ModelConfig,
    engine_layout: EngineLayout,
    parallel: Any,
    run_yaml: dict[str, Any],
    tokenizer_files: tuple[str, ...],
    keep_last: int | None,
) -> Path:
    """Save on every rank (collective); rank 0 writes the metadata, files.json, then `latest`.
    A full disk is `DiskFull` naming the path, on the rank that met it."""
    save_dir = Path(save_dir)
    step_dir = save_dir / step_tag(iteration)
    if dist.get_rank() == 0:
        _start_step(step_dir)
    dist.barrier()
    try:
        engine.save_checkpoint(str(save_dir), tag=step_dir.name, save_latest=False)
        zero3 = engine_layout.zero_stage == 3
        consolidated = zero3_whole_weights(engine) if zero3 else None
        entries: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(entries, describe_rank(engine, parallel, step_dir))
        if dist.get_rank() == 0:
            if consolidated is not None:
                torch.save(dict(consolidated), step_dir / CONSOLIDATED)
            write_layout(step_dir, saved_layout(engine_layout, entries))
            _write_metadata(step_dir, state, config, engine_layout, run_yaml, tokenizer_files)
        _seal(step_dir)
    except (OSError, RuntimeError) as err:
        raise_if_disk_full(err, step_dir)
        raise
    if dist.get_rank() == 0:
        write_latest(save_dir, step_dir)
        if keep_last:
            _prune(save_dir, keep_last)
    dist.barrier()
    return step_dir


def _start_step(step_dir: Path) -> None:
    """An empty step directory marked as this run's (it appears with its mark inside); what a
    killed save left there goes."""
    if step_dir.exists():
        if is_complete(step_dir):  # resolve_start leaves no complete step ahead of the run
            raise CheckpointError(f"{step_dir} already holds a complete checkpoint")
        log.info("removing %s, left incomplete by an earlier save", step_dir)
        shutil.rmtree(step_dir)
    staging = step_dir.with_name(f".{step_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_atomic(staging / SAVING, "")
    staging.rename(step_dir)


def _seal(step_dir: Path) -> None:
    """files.json: every rank checksums a share of the step's files, rank 0 writes the record."""
    dist.barrier()  # every file of the step is written
    names: list[Any] = [step_files(step_dir) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(names, src=0)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = record_files(step_dir, names[0][rank::world])
    shares: list[Any] = [None] * world
    dist.all_gather_object(shares, mine)
    if rank == 0:
        records: dict[str, FileRecord] = {k: v for share in shares for k, v in share.items()}
        seal_step(step_dir, records)


def weight_files(
    step_dir: Path, config: ModelConfig, layout: EngineLayout
) -> tuple[WeightFile, ...]:
    """The files of a saved step that hold the model, and how to read each."""
    if layout.zero_stage == 3:
        return (WeightFile(CONSOLIDATED),)
    files, pipeline = [], layout.pipe > 1
    for path in sorted(step_dir.iterdir()):
        if pipeline and (match := LAYER_FILE.match(path.name)):
            rename_from, rename_to = layer_name_map(config, int(match[1]))
            files.append(WeightFile(path.name, "", int(match[2]), rename_from, rename_to))
        elif not pipeline and (match := MODEL_FILE.match(path.name)):
            files.append(WeightFile(path.name, "module", int(match[1])))
    if not files:
        raise RuntimeError(f"no model weight files found in {step_dir}")
    return tuple(files)


def _write_metadata(
    step_dir: Path,
    state: SavedStep,
    config: ModelConfig,
    layout: EngineLayout,
    run_yaml: dict[str, Any],
    tokenizer_files: tuple[str, ...],
) -> None:
    """The tokenizer's files (vocabulary first) are copied in under their own names."""
    for name in tokenizer_files:
        write_atomic(step_dir / Path(name).name, Path(name).read_bytes())
    write_atomic(step_dir / RUN_CONFIG, yaml.safe_dump(run_yaml, sort_keys=False))
    body: dict[str, Any] = {
        "iteration": state.iteration,
        "consumed_samples": state.consumed_samples,
    }
    if state.schedule is not None:
        body[_SCHEDULE] = dataclasses.asdict(state.schedule)
    if state.reference is not None:
        body[_REFERENCE] = state.reference
    write_atomic(step_dir / STATE_FILE, json.dumps(body, indent=2) + "\n")
    manifest = ModelManifest(
        config=config,
        files=weight_files(step_dir, config, layout),
        tensor_parallel=1 if layout.zero_stage == 3 else layout.tensor,
        expert_parallel=layout.expert,
        tokenizer=Path(tokenizer_files[0]).name if tokenizer_files else None,
        tokenizer_type=run_yaml.get("tokenizer_type"),
        merge_file=Path(run_yaml["merge_file"]).name if run_yaml.get("merge_file") else None,
    )
    write_manifest(step_dir, manifest)


def _prune(save_dir: Path, keep_last: int) -> None:
    for path in complete_steps(save_dir)[:-keep_last]:
        log.info("removing old checkpoint %s", path)
        shutil.rmtree(path)


def saved_padded_vocab(step_dir: Path) -> int:
    """The embedding rows of a saved step."""
    return read_manifest(step_dir).padded_vocab


def _saved_layout(step_dir: Path, weights_only: bool) -> SavedLayout | None:
    """layout.json; for a step without one (written by neox-convert, or by an older neox) and
    read for its weights alone, the tensor-parallel size its model.json gives."""
    saved = read_layout(step_dir)
    if saved is not None or not weights_only:
        return saved
    manifest = read_manifest(step_dir)
    pipeline = any(LAYER_FILE.match(f.file) for f in manifest.files)
    if pipeline:
        return None  # DeepSpeed reads the layer files at any pipeline size
    layout = EngineLayout(manifest.tensor_parallel, 1, 0, 0, "", expert=manifest.expert_parallel)
    return SavedLayout(layout, "none", ())


def load(
    engine: Any,
    step_dir: Path,
    *,
    current: EngineLayout,
    tp: TPGroup,
    weights_only: bool = False,
    optimizer: bool = True,
    new: frozenset[str] = frozenset(),
) -> SavedStep:
    """Restore the engine from a complete, verified step (`neox_train.checkpoint.resume` chose it).

    `weights_only` (fine-tuning) loads the model alone and restarts at step 0; `optimizer`
    False keeps the fresh optimizer and schedule. A checkpoint saved at a layout other than
    `current` is read through its layout.json. `new`: weights (whole-model names) the step does
    not hold, which keep their initial values (weights only: a reward model's score head on a
    language model's step); the step's weights this model lacks are not read.
    """
    with_state = optimizer and not weights_only
    assert weights_only or not new
    try:
        _load_step(engine, step_dir, current, tp, weights_only, with_state, new)
    except (RuntimeError, EOFError, KeyError) as err:
        raise damaged(step_dir, err) from err
    if weights_only:
        return SavedStep(0, 0)
    if with_state and engine.lr_scheduler is not None:
        engine.lr_scheduler.apply()  # ZeRO's optimizer state, read last, set the saved rates
    return saved_state(step_dir)


# neox_state.json's record of the LR schedule (absent from the steps of earlier neox versions)
_SCHEDULE = "lr_schedule"
_REFERENCE = "reference"  # train_impl dpo and kto: SavedStep.reference


def saved_state(step_dir: Path) -> SavedStep:
    """neox_state.json of a step saved with its training state."""
    body = json.loads((step_dir / STATE_FILE).read_text())
    record = body.get(_SCHEDULE)
    schedule = Schedule(**record) if record is not None else None
    return SavedStep(body["iteration"], body["consumed_samples"], schedule, body.get(_REFERENCE))


def _load_step(
    engine: Any,
    step_dir: Path,
    current: EngineLayout,
    tp: TPGroup,
    weights_only: bool,
    with_state: bool,
    new: frozenset[str],
) -> None:
    saved = _saved_layout(step_dir, weights_only)
    if saved is not None and (saved.resharded or _differs(saved.layout, current, weights_only)):
        log.info(
            "%s was saved at %s; continuing at %s",
            step_dir,
            saved.layout.describe(),
            current.describe(),
        )
        load_relayout(engine, step_dir, saved, tp, optimizer=with_state, new=new)
        return
    path, _ = engine.load_checkpoint(
        str(step_dir.parent),
        tag=step_dir.name,
        load_module_only=weights_only,
        load_optimizer_states=with_state,
        load_lr_scheduler_states=with_state,
        load_module_strict=not new,  # the caller checked that only `new` differs
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint files in {step_dir}")


def _differs(saved: EngineLayout, current: EngineLayout, weights_only: bool) -> bool:
    """Whether DeepSpeed cannot read the step back as saved (for the weights alone, only the
    model-parallel sizes matter)."""
    if weights_only:  # DeepSpeed reads pipeline layer files at any number of stages
        return (saved.tensor, saved.expert, saved.pipe > 1) != (
            current.tensor,
            current.expert,
            current.pipe > 1,
        )
    return saved != current
