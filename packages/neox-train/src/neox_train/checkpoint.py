"""Checkpoints: one directory per step, DeepSpeed's engine state plus neox's metadata.

    SAVE/global_step{N}/   DeepSpeed files: mp_rank_XX_model_states.pt per tensor-parallel rank
                           (or layer_LL-model_XX-model_states.pt per pipeline layer), optimizer
                           shards; with ZeRO-3 also consolidated_model_states.pt
                           model.json (architecture + which file holds which weights),
                           layout.json (the layout, and which files hold each rank's state),
                           config.yml (the resolved run config), tokenizer file, neox_state.json
    SAVE/latest            "global_step{N}", written last and atomically

A step directory without `latest` pointing at it is never read, so a crash mid-save leaves the
previous checkpoint in force. A run at the saved layout resumes through DeepSpeed; a run at
another reads the step through layout.json (`neox_train.relayout`).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from neox_model import (
    LATEST,
    LAYER_FILE,
    MANIFEST,
    MODEL_FILE,
    EngineLayout,
    ModelConfig,
    ModelManifest,
    SavedLayout,
    TPGroup,
    WeightFile,
    find_step_dir,
    layer_name_map,
    read_layout,
    read_manifest,
    write_layout,
    write_manifest,
)
from neox_train.relayout import describe_rank, load_relayout, saved_layout

log = logging.getLogger(__name__)

CONSOLIDATED = "consolidated_model_states.pt"  # ZeRO-3: the gathered weights, by neox
_STEP_DIR = re.compile(r"global_step(\d+)$")


@dataclass(frozen=True)
class SavedStep:
    iteration: int
    consumed_samples: int


def step_tag(iteration: int) -> str:
    return f"global_step{iteration}"


@dataclass(frozen=True)
class ModelLayout:
    """What a checkpoint's weight files look like: how the model was split when saved."""

    config: ModelConfig
    tensor_parallel: int
    pipeline: bool
    zero3: bool


def save(
    engine: Any,
    save_dir: str | Path,
    iteration: int,
    *,
    state: SavedStep,
    layout: ModelLayout,
    engine_layout: EngineLayout,
    parallel: Any,
    run_yaml: dict[str, Any],
    tokenizer_files: tuple[str, ...],
    keep_last: int | None,
) -> Path:
    """Save on every rank (collective); rank 0 writes metadata and then `latest`."""
    save_dir = Path(save_dir)
    tag = step_tag(iteration)
    engine.save_checkpoint(str(save_dir), tag=tag, save_latest=False)
    step_dir = save_dir / tag
    consolidated = engine._zero3_consolidated_16bit_state_dict() if layout.zero3 else None
    entries: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(entries, describe_rank(engine, parallel, step_dir))
    if dist.get_rank() == 0:
        if consolidated is not None:
            torch.save(dict(consolidated), step_dir / CONSOLIDATED)
        write_layout(step_dir, saved_layout(engine_layout, entries))
        _write_metadata(step_dir, state, layout, run_yaml, tokenizer_files)
        _write_atomic(save_dir / LATEST, tag + "\n")
        if keep_last:
            _prune(save_dir, keep_last)
    dist.barrier()
    return step_dir


def weight_files(step_dir: Path, layout: ModelLayout) -> tuple[WeightFile, ...]:
    """The files of a saved step that hold the model, and how to read each."""
    if layout.zero3:
        return (WeightFile(CONSOLIDATED),)
    files = []
    for path in sorted(step_dir.iterdir()):
        if layout.pipeline and (match := LAYER_FILE.match(path.name)):
            rename_from, rename_to = layer_name_map(layout.config, int(match[1]))
            files.append(WeightFile(path.name, "", int(match[2]), rename_from, rename_to))
        elif not layout.pipeline and (match := MODEL_FILE.match(path.name)):
            files.append(WeightFile(path.name, "module", int(match[1])))
    if not files:
        raise RuntimeError(f"no model weight files found in {step_dir}")
    return tuple(files)


def _write_metadata(
    step_dir: Path,
    state: SavedStep,
    layout: ModelLayout,
    run_yaml: dict[str, Any],
    tokenizer_files: tuple[str, ...],
) -> None:
    """The tokenizer's files (vocabulary first) are copied in under their own names."""
    for name in tokenizer_files:
        shutil.copyfile(name, step_dir / Path(name).name)
    _write_atomic(step_dir / "config.yml", yaml.safe_dump(run_yaml, sort_keys=False))
    body = {"iteration": state.iteration, "consumed_samples": state.consumed_samples}
    _write_atomic(step_dir / "neox_state.json", json.dumps(body, indent=2) + "\n")
    manifest = ModelManifest(
        config=layout.config,
        files=weight_files(step_dir, layout),
        tensor_parallel=1 if layout.zero3 else layout.tensor_parallel,
        tokenizer=Path(tokenizer_files[0]).name if tokenizer_files else None,
    )
    write_manifest(step_dir, manifest)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(save_dir: Path, keep_last: int) -> None:
    steps = sorted(
        (int(m.group(1)), p)
        for p in save_dir.iterdir()
        if p.is_dir() and (m := _STEP_DIR.match(p.name))
    )
    for _, path in steps[:-keep_last]:
        log.info("removing old checkpoint %s", path)
        shutil.rmtree(path)


class CorruptCheckpoint(ValueError):
    """A step directory whose files cannot be read back."""


def step_to_load(load_dir: str | Path) -> Path | None:
    """The step `load` names: a run directory's newest complete step (its `latest`), or a step
    directory named directly (to go back to an earlier one); None when there is none yet."""
    path = Path(load_dir)
    if (path / MANIFEST).is_file():
        return path
    if not (path / LATEST).is_file():
        return None
    return find_step_dir(path)


def saved_padded_vocab(load_dir: str | Path) -> int | None:
    """The embedding rows of the checkpoint `load_dir` names (None: there is none)."""
    step_dir = step_to_load(load_dir)
    return read_manifest(step_dir).padded_vocab if step_dir is not None else None


def complete_steps(run_dir: Path) -> list[Path]:
    """The run's step directories whose metadata was written (the last thing a save does),
    oldest first."""
    steps = [
        (int(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / MANIFEST).is_file()
    ]
    return [p for _, p in sorted(steps)]


def _corrupt(step_dir: Path, err: BaseException) -> CorruptCheckpoint:
    earlier = [p for p in complete_steps(step_dir.parent) if p.name != step_dir.name]
    hint = (
        f"name an earlier complete step with `load: {earlier[-1]}` (others: "
        f"{', '.join(p.name for p in earlier[:-1]) or 'none'})"
        if earlier
        else "the run holds no other complete step"
    )
    detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return CorruptCheckpoint(
        f"{step_dir} cannot be read back ({detail}): a file is damaged or belongs to another "
        f"model; {hint}"
    )


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
    layout = EngineLayout(manifest.tensor_parallel, 1, 0, 0, "")
    return SavedLayout(layout, "none", ())


def load(
    engine: Any,
    load_dir: str | Path,
    *,
    current: EngineLayout,
    tp: TPGroup,
    weights_only: bool = False,
    optimizer: bool = True,
) -> SavedStep | None:
    """Restore the engine from the newest checkpoint in `load_dir`; None when there is none.

    `weights_only` (fine-tuning) loads the model alone and restarts at step 0; `optimizer`
    False keeps the fresh optimizer and schedule. A checkpoint saved at a layout other than
    `current` is read through its layout.json.
    """
    step_dir = step_to_load(load_dir)
    if step_dir is None:
        return None
    with_state = optimizer and not weights_only
    try:
        _load_step(engine, step_dir, current, tp, weights_only, with_state)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _corrupt(step_dir, err) from err
    if weights_only:
        return SavedStep(0, 0)
    body = json.loads((step_dir / "neox_state.json").read_text())
    return SavedStep(body["iteration"], body["consumed_samples"])


def _load_step(
    engine: Any,
    step_dir: Path,
    current: EngineLayout,
    tp: TPGroup,
    weights_only: bool,
    with_state: bool,
) -> None:
    saved = _saved_layout(step_dir, weights_only)
    if saved is not None and (saved.resharded or _differs(saved.layout, current, weights_only)):
        log.info(
            "%s was saved at %s; continuing at %s",
            step_dir,
            saved.layout.describe(),
            current.describe(),
        )
        load_relayout(engine, step_dir, saved, tp, optimizer=with_state)
        return
    path, _ = engine.load_checkpoint(
        str(step_dir.parent),
        tag=step_dir.name,
        load_module_only=weights_only,
        load_optimizer_states=with_state,
        load_lr_scheduler_states=with_state,
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint files in {step_dir}")


def _differs(saved: EngineLayout, current: EngineLayout, weights_only: bool) -> bool:
    """Whether DeepSpeed cannot read the step back as saved (for the weights alone, only the
    model-parallel sizes matter)."""
    if weights_only:  # DeepSpeed reads pipeline layer files at any number of stages
        return (saved.tensor, saved.pipe > 1) != (current.tensor, current.pipe > 1)
    return saved != current
