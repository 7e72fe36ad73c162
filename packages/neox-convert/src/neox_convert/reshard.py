"""`reshard`: a neox checkpoint's model weights at another tensor and pipeline layout.

The checkpoint is read whole (`neox_model.load_state_dict` joins any layout) and written at the
new one (`checkpoint`), under the same step name, with its tokenizer files and its config.yml,
whose layout, `load`, `save` and `finetune` keys are updated. Optimizer state is not carried over
(not supported yet): neox-train continues from the weights with `finetune: true`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from neox_convert.checkpoint import Destination, Layout, run_config, write_checkpoint
from neox_convert.hf_files import TOKENIZER_FILES
from neox_convert.staging import check_destination, staged_directory
from neox_convert.tokenizer_files import TokenizerFiles
from neox_model import ModelManifest, load_state_dict

log = logging.getLogger(__name__)

NOTE = (
    "model weights only: optimizer state is not carried over by reshard (not supported yet);\n"
    "neox train continues from the weights with finetune: true (set here)"
)


def _tokenizer(step_dir: Path, manifest: ModelManifest) -> TokenizerFiles:
    """The manifest's tokenizer file, then the other tokenizer files beside it (the run
    config's tokenizer keys come from the source's config.yml)."""
    vocab = step_dir / manifest.tokenizer if manifest.tokenizer else None
    others = [step_dir / n for n in TOKENIZER_FILES if (step_dir / n).is_file()]
    return TokenizerFiles(None, vocab, None, tuple(p for p in others if p != vocab))


def resharded_config(
    step_dir: Path, manifest: ModelManifest, layout: Layout, dest: Destination
) -> dict[str, Any]:
    """The source's config.yml (or one made from the manifest) for the new layout and place."""
    source = step_dir / "config.yml"
    values: dict[str, Any]
    if source.is_file():
        values = yaml.safe_load(source.read_text()) or {}
    else:
        values = run_config(manifest.config, layout, dest.final, {})
    new_step = dest.final / dest.step
    for key in ("vocab_file", "merge_file"):
        if values.get(key) and (step_dir / Path(values[key]).name).is_file():
            values[key] = str(new_step / Path(values[key]).name)
    values.update(
        model_parallel_size=layout.tensor_parallel,
        pipe_parallel_size=layout.pipe_parallel,
        load=str(dest.final),
        save=str(dest.final),
        finetune=True,
    )
    return values


def reshard(
    input_dir: str | Path, output_dir: str | Path, *, layout: Layout, overwrite: bool = False
) -> Path:
    """Write the model weights of a checkpoint (step or run directory) at `layout`."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_destination(output_dir, overwrite, input_dir)
    step_dir, manifest, state = load_state_dict(input_dir)
    layout.check(manifest.config)
    with staged_directory(output_dir) as staging:
        dest = Destination(staging, output_dir.resolve(), step_dir.name)
        values = resharded_config(step_dir, manifest, layout, dest)
        header = f"neox-convert reshard {step_dir.resolve()}\n{NOTE}"
        tokenizer = _tokenizer(step_dir, manifest)
        write_checkpoint(dest, manifest.config, state, layout, tokenizer, values, header)
    log.info("resharded %s into %s (%s)", step_dir, output_dir, layout)
    return output_dir
