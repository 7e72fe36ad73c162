"""`reshard`: a neox checkpoint at another tensor and pipeline layout.

The weights are read whole (`neox_model.load_state_dict` joins any layout) and written at the
new layout (`checkpoint`), under the same step name, with the tokenizer files and config.yml,
whose layout, `load` and `save` keys are updated.

A step written by neox-train has the optimizer state too, described by its layout.json. That
state is carried over as it was saved: DeepSpeed's files holding it are copied under
`optimizer/` and layout.json, naming them there, is marked `resharded`. neox-train, resuming
from the result at any layout, cuts each rank's share out of them
(`neox_train.checkpoint.relayout`), with the step, schedule and data position; config.yml keeps
`finetune: false`. Without readable optimizer state (an import, ZeRO-3, fp16 without ZeRO) the
weights alone are written and config.yml says `finetune: true`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from neox_convert.checkpoint import (
    Destination,
    check_split,
    finish_run,
    run_config,
    write_checkpoint,
)
from neox_convert.hf_files import TOKENIZER_FILES
from neox_convert.staging import check_destination, staged_directory
from neox_convert.tokenizer_files import TokenizerFiles
from neox_model import (
    ModelManifest,
    ParallelDims,
    SavedLayout,
    load_state_dict,
    read_layout,
    write_layout,
)
from neox_model.checkpoint import RUN_CONFIG, STATE_FILE, verify_step
from neox_model.config_files import load_yaml

log = logging.getLogger(__name__)

OPTIMIZER_DIR = "optimizer"
NOTE = (
    "model weights only: the source has no optimizer state neox can read (an import, ZeRO-3,\n"
    "or fp16 without ZeRO); neox train continues from the weights with finetune: true (set here)"
)
RESUME_NOTE = (
    "the optimizer state is carried over as saved (optimizer/, named by layout.json);\n"
    "neox train resumes from this step at any layout, schedule and data position included"
)


def _tokenizer(step_dir: Path, manifest: ModelManifest, values: dict[str, Any]) -> TokenizerFiles:
    """The tokenizer the manifest records (for a step from before it recorded the type and
    merges: the run config `values`' keys), then the other tokenizer files beside it."""
    vocab = step_dir / manifest.tokenizer if manifest.tokenizer else None
    merge_name = manifest.merge_file or Path(values.get("merge_file") or "").name
    merges = step_dir / merge_name if merge_name and (step_dir / merge_name).is_file() else None
    kind = manifest.tokenizer_type or values.get("tokenizer_type")
    others = [step_dir / n for n in TOKENIZER_FILES if (step_dir / n).is_file()]
    return TokenizerFiles(kind, vocab, merges, tuple(p for p in others if p not in (vocab, merges)))


def resharded_config(
    step_dir: Path, manifest: ModelManifest, layout: ParallelDims, dest: Destination, resume: bool
) -> dict[str, Any]:
    """The source's config.yml (or one made from the manifest) for the new layout and place."""
    source = step_dir / RUN_CONFIG
    values: dict[str, Any]
    if source.is_file():
        values = load_yaml(source)  # neox-train's reader (repeated keys refused)
    else:
        values = run_config(manifest.config, layout, dest.final, {})
    new_step = dest.final / dest.step
    for key in ("vocab_file", "merge_file"):
        if values.get(key) and (step_dir / Path(values[key]).name).is_file():
            values[key] = str(new_step / Path(values[key]).name)
    values.update(
        model_parallel_size=layout.tensor,
        pipe_parallel_size=layout.pipe,
        load=str(dest.final),
        save=str(dest.final),
        finetune=not resume,
    )
    return values


def carry_optimizer_state(step_dir: Path, new_step: Path) -> SavedLayout | None:
    """Copy the files layout.json names into `new_step/optimizer/`, with the step's position,
    and write the layout.json that names them there; None when there is no readable state."""
    saved = read_layout(step_dir)
    if saved is None or not saved.readable_optimizer:
        return None
    verify_step(step_dir)  # the optimizer files are copied as they are: checked first
    if not (step_dir / STATE_FILE).is_file():
        raise FileNotFoundError(f"{step_dir} has layout.json but no {STATE_FILE}")
    (new_step / OPTIMIZER_DIR).mkdir()
    for name in sorted(set().union(*(r.files() for r in saved.ranks))):
        shutil.copyfile(step_dir / name, new_step / OPTIMIZER_DIR / name)
    shutil.copyfile(step_dir / STATE_FILE, new_step / STATE_FILE)
    ranks = tuple(r.moved(OPTIMIZER_DIR) for r in saved.ranks)
    carried = dataclasses.replace(saved, ranks=ranks, resharded=True)
    write_layout(new_step, carried)
    return carried


def reshard(
    input_dir: str | Path, output_dir: str | Path, *, layout: ParallelDims, overwrite: bool = False
) -> Path:
    """Write a checkpoint (step or run directory) at `layout`: the weights, and the optimizer
    state as saved where the step has it."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_destination(output_dir, overwrite, input_dir)
    step_dir, manifest, state = load_state_dict(input_dir)
    check_split(layout, manifest.config)
    resume = (saved := read_layout(step_dir)) is not None and saved.readable_optimizer
    with staged_directory(output_dir) as staging:
        dest = Destination(staging, output_dir.resolve(), step_dir.name)
        values = resharded_config(step_dir, manifest, layout, dest, resume)
        note = RESUME_NOTE if resume else NOTE
        header = f"neox-convert reshard {step_dir.resolve()}\n{note}"
        tokenizer = _tokenizer(step_dir, manifest, values)
        write_checkpoint(dest, manifest.config, state, layout, tokenizer, values, header)
        if resume:
            carry_optimizer_state(step_dir, staging / step_dir.name)
        finish_run(dest)
    what = "weights and optimizer state" if resume else "weights"
    log.info("resharded %s of %s into %s (%s)", what, step_dir, output_dir, layout)
    return output_dir
