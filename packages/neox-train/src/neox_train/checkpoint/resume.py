"""Where a run starts: from scratch, from `load`, or from its own `save` directory.

The rules, applied by rank 0 before the model is built; the one chosen is printed at start:

- `save` holds a complete `latest` step of this model (the run was stopped and started again):
  continue from it, whatever `load` says (`load` and `finetune` describe a fresh start). A step
  with no training state (a conversion's step 0) is still read for its weights alone when
  `finetune` is set.
- else `load` names the start: a step directory, or a run directory through its `latest`. A
  `load` that does not exist, or holds no complete step, is an error naming what was looked for
  (GPT-NeoX's configs set `load` = `save`: that directory empty or missing is a fresh start).
- else a fresh start.

`save` must not end up mixing two runs: steps in it that the run would not continue (another
model's, complete steps that no `latest` names, steps newer than the start, directories that are
not neox checkpoints) make the start fail with one line, unless `overwrite_save` moves them into
SAVE/replaced_<time>/. Incomplete steps that an earlier neox save left (its `.neox_save` mark, no
files.json) are removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from neox_model import LAYOUT_FILE, ModelConfig, Transformer, read_manifest
from neox_model.checkpoint import (
    LATEST,
    MANIFEST,
    SAVING,
    CheckpointError,
    complete_steps,
    is_complete,
    resolve_step,
    step_dirs,
    step_number,
    verify_step,
)
from neox_model.checkpoint.integrity import read_records, weight_reader_names
from neox_train.config.schema import SaidOnRankZero

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartPoint:
    """What the run starts from, and what must happen to `save` first."""

    step_dir: Path | None  # None: from scratch
    weights_only: bool  # the weights alone, from step 0 (fine-tuning)
    origin: Path | None  # the directory named (`load` or `save`), as the user wrote it
    why: str  # which rule chose it, for the line printed at start
    leftovers: tuple[Path, ...] = ()  # incomplete steps of earlier saves: removed
    conflicts: tuple[Path, ...] = ()  # steps the run would write over or mix with
    conflict_reason: str = ""
    latest_conflicts: bool = False  # `latest` names a conflicting step: it goes with them
    save_dir: Path | None = field(default=None, compare=False)


def resolve_start(
    load: str | None, save: str | None, finetune: bool, model: ModelConfig
) -> StartPoint:
    """The start point of a run (reads the file system, changes nothing)."""
    save_dir = Path(save) if save else None
    load_dir = Path(load) if load else None
    if (
        save_dir is not None
        and load_dir is not None
        and step_number(load_dir) is not None
        and _same(load_dir.parent, save_dir)
    ):
        return _from_own_step(load_dir, save_dir, finetune)
    own = _own_latest(save_dir, model)
    if own is not None:
        return own
    if load_dir is not None and not (save_dir is not None and _same(load_dir, save_dir)):
        step = resolve_step(load_dir)
        start = StartPoint(step, finetune, load_dir, f"{step.name}, named by load")
        return _with_save(start, save_dir, "steps of a run this one does not continue")
    return _fresh(save_dir, model)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _trainable(step: Path) -> bool:
    """Whether a step holds training state (optimizer, schedule): a neox-train save does."""
    return (step / LAYOUT_FILE).is_file()


def _own_latest(save_dir: Path | None, model: ModelConfig) -> StartPoint | None:
    """Continue the run in `save` when its `latest` is a complete step of this model, or a
    newer complete step that this neox saved (a stop between files.json and `latest`)."""
    if save_dir is None or not (save_dir / LATEST).is_file():
        return None
    step = resolve_step(save_dir)  # a `latest` naming a missing step is an error, not a restart
    if model_differences(_saved_model(step), model):
        return None
    why = f"{step.name}, the latest step of save: the run continues"
    newer = [s for s in complete_steps(save_dir) if _number(s) > _number(step)]
    if newer and (newer[-1] / SAVING).is_file():
        why = f"{newer[-1].name}: its save finished, but `latest` still named {step.name}"
        step = newer[-1]
    start = StartPoint(step, not _trainable(step), save_dir, why)
    return _with_save(start, save_dir, "steps newer than the one it resumes", after=step)


def _saved_model(step: Path) -> ModelConfig:
    verify_step(step, [MANIFEST])
    return read_manifest(step).config


def _number(step: Path) -> int:
    return step_number(step) or 0


def _from_own_step(load_dir: Path, save_dir: Path, finetune: bool) -> StartPoint:
    """`load` names one step of `save` (to go back to it): later steps would be mixed."""
    step = resolve_step(load_dir)
    weights_only = finetune and not _trainable(step)
    start = StartPoint(step, weights_only, load_dir, f"{step.name}, named by load")
    return _with_save(start, save_dir, f"steps newer than {step.name}, which `load` names", step)


def _fresh(save_dir: Path | None, model: ModelConfig) -> StartPoint:
    start = StartPoint(None, False, None, f"{save_dir or 'save'} holds no checkpoint yet")
    if save_dir is None:
        return start
    reason = "complete steps that no `latest` names"
    if (save_dir / LATEST).is_file():
        theirs = model_differences(_saved_model(resolve_step(save_dir)), model)
        reason = f"another model's steps ({'; '.join(theirs)})"
    return _with_save(start, save_dir, reason)


def _with_save(
    start: StartPoint, save_dir: Path | None, reason: str, after: Path | None = None
) -> StartPoint:
    """`start` with the steps of `save` it would remove (leftovers) or collide with."""
    if save_dir is None:
        return start
    leftovers, foreign, complete = [], [], []
    for step in step_dirs(save_dir):
        if is_complete(step):
            complete.append(step)
        elif (step / SAVING).is_file():
            leftovers.append(step)
        else:
            foreign.append(step)
    if after is not None:
        complete = [s for s in complete if _number(s) > _number(after)]
    conflicts = tuple(complete + foreign)
    reasons = [reason] if complete else []
    if foreign:
        reasons.append("directories named like steps that are not neox checkpoints")
    latest = save_dir / LATEST
    named = latest.is_file() and (save_dir / latest.read_text().strip()) in conflicts
    return StartPoint(
        start.step_dir,
        start.weights_only,
        start.origin,
        start.why,
        tuple(leftovers),
        conflicts,
        " and ".join(reasons),
        named or (latest.is_file() and start.step_dir is None and bool(conflicts)),
        save_dir,
    )


def model_differences(saved: ModelConfig, current: ModelConfig) -> list[str]:
    """What makes the saved model's weights another model's (empty: the same shapes)."""
    if _shapes(saved) == _shapes(current):
        return []
    ours, theirs = current.to_dict(), saved.to_dict()
    keys = sorted((k for k in ours if ours.get(k) != theirs.get(k)), key=_SHAPE_KEYS.__contains__)
    keys.reverse()  # the keys that size weights first
    return [f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in keys[:3]]


_SHAPE_KEYS = frozenset(
    {
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_heads",
        "intermediate_size",
        "vocab_size",
        "pos_emb",
        "no_weight_tying",
        "norm",
        "activation",
        "use_bias_in_attn_linear",
    }
)


def _shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = Transformer(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def prepare_save(start: StartPoint, overwrite: bool) -> None:
    """Rank 0: refuse a start that would mix runs, or move the conflicts aside
    (`overwrite_save`); remove the leftovers of killed saves."""
    save_dir = start.save_dir
    if save_dir is None:
        return
    if start.conflicts and not overwrite:
        raise CheckpointError(
            f"{save_dir} holds {start.conflict_reason}: {_names(start.conflicts)}; refusing to "
            "write over them: choose another `save`, or set `overwrite_save: true` to move "
            f"them into {save_dir}/replaced_<time>/"
        )
    if start.conflicts:
        aside = save_dir / time.strftime("replaced_%Y%m%d-%H%M%S")
        aside.mkdir()
        moved = [*start.conflicts, *([save_dir / LATEST] if start.latest_conflicts else [])]
        for path in moved:
            path.rename(aside / path.name)
        log.warning("overwrite_save: moved %s into %s", _names(tuple(moved)), aside)
    for step in start.leftovers:
        log.info("removing %s, left incomplete by a save that did not finish", step)
        shutil.rmtree(step)


def _names(paths: tuple[Path, ...]) -> str:
    shown = ", ".join(p.name for p in paths[:6])
    return shown + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")


def choose_start(
    load: str | None, save: str | None, finetune: bool, overwrite: bool, model: ModelConfig
) -> StartPoint:
    """Rank 0 resolves the start and prepares `save`; every rank gets the same answer, or
    the same CheckpointError (collective)."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            start = resolve_start(load, save, finetune, model)
            prepare_save(start, overwrite)
            box[0] = start
        except CheckpointError as err:
            box[0] = err
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], CheckpointError):
        raise box[0] if dist.get_rank() == 0 else SaidOnRankZero(str(box[0]))
    return box[0]


def verify_start(start: StartPoint) -> None:
    """Every rank checks a share of the step's files against its files.json; all fail together
    on the first damaged file (collective)."""
    if start.step_dir is None:
        return
    step = start.step_dir
    records = read_records(step)
    if records is None:  # a step saved before files.json: checked as far as it can be
        verify_step(step)
        return
    weights = {f.file for f in read_manifest(step).files}
    names = weight_reader_names(step, weights) if start.weights_only else sorted(records)
    assert names is not None
    rank, world = dist.get_rank(), dist.get_world_size()
    problem: str | None = None
    try:
        verify_step(step, names[rank::world])
    except CheckpointError as err:
        problem = str(err)
    problems: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(problems, problem)
    else:
        problems = [problem]
    first = next((p for p in problems if p), None)
    if first:
        raise CheckpointError(first) if dist.get_rank() == 0 else SaidOnRankZero(first)
