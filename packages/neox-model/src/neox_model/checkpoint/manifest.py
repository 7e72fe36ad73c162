"""Where a checkpoint keeps the model: `model.json` beside the weight files.

The trainer writes the manifest into each checkpoint step directory: the architecture
(`ModelConfig`), the tensor-parallel size the weights were saved at, and every file holding a
piece of the model's state dict, with the tensor-parallel rank it belongs to and how its names
map to the `Transformer`'s (a pipeline layer file holds `block.*` for `layers.3.*`). Readers
(generation, export, evaluation) rebuild the full model from the manifest alone
(`neox_model.load_model`), whatever the layout it was trained with. The manifest also names the
tokenizer saved in the step: its GPT-NeoX `tokenizer_type` and its files (the vocabulary, a GPT-2
merges file), so that a reader builds it without reading the run config.

Format version 3 goes with files.json (`integrity`); version 2, from before, is still read. A
manifest written before the tokenizer type was recorded has `tokenizer_type` None (its
vocabulary file may be named): the step's config.yml says which tokenizer it is.

Under expert parallelism (`expert_parallel` > 1; tensor parallel is then 1) the files' `tp_rank`
is the expert-parallel rank: each holds every weight whole except the mixtures' experts, split
by expert along their first dimension (`tensor_parallel_specs`). A manifest without the key
was saved without expert parallelism.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from neox_model.checkpoint.format import MANIFEST, CorruptCheckpoint, NoCheckpoint, write_atomic
from neox_model.config import ModelConfig

FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)


@dataclass(frozen=True)
class WeightFile:
    """One file with part of the model's state dict."""

    file: str  # relative to the step directory
    key: str = ""  # key of the state dict inside the file ("" = the file is the state dict)
    tp_rank: int = 0
    rename_from: str = ""  # a name prefix in the file ...
    rename_to: str = ""  # ... that reads as this prefix in the Transformer

    def model_name(self, name: str) -> str:
        if self.rename_from and name.startswith(self.rename_from):
            return self.rename_to + name[len(self.rename_from) :]
        return self.rename_to + name if not self.rename_from else name


@dataclass(frozen=True)
class ModelManifest:
    config: ModelConfig
    files: tuple[WeightFile, ...]
    tensor_parallel: int = 1
    tokenizer: str | None = None  # the tokenizer's (vocabulary) file, relative, if saved
    tokenizer_type: str | None = None  # GPT-NeoX's name; None: not recorded (an older step)
    merge_file: str | None = None  # the GPT-2 BPE merges file, relative, if saved
    expert_parallel: int = 1  # ranks the experts were split over (their files' tp_rank)

    @property
    def slices(self) -> int:
        """How many ranks' files make up the model (tensor- or expert-parallel)."""
        return self.tensor_parallel * self.expert_parallel

    @property
    def padded_vocab(self) -> int:
        """Rows of the saved embedding: the vocabulary padded for the saving layout."""
        return self.config.padded_vocab(self.tensor_parallel)

    def to_json(self) -> str:
        body = {
            "format_version": FORMAT_VERSION,
            "model_config": self.config.to_dict(),
            "tensor_parallel": self.tensor_parallel,
            "files": [dataclasses.asdict(f) for f in self.files],
            "tokenizer": self.tokenizer,
            "tokenizer_type": self.tokenizer_type,
            "merge_file": self.merge_file,
            "expert_parallel": self.expert_parallel,
        }
        return json.dumps(body, indent=2) + "\n"


def write_manifest(step_dir: str | Path, manifest: ModelManifest) -> Path:
    """Write `model.json` (whole or not at all)."""
    return write_atomic(Path(step_dir) / MANIFEST, manifest.to_json())


def read_manifest(step_dir: str | Path) -> ModelManifest:
    path = Path(step_dir) / MANIFEST
    if not path.is_file():
        raise NoCheckpoint(f"{path} not found: {step_dir} is not a neox checkpoint step")
    try:
        body = json.loads(path.read_text())
        version = body.get("format_version")
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise CorruptCheckpoint(f"{path} is damaged: {err}") from err
    if version not in READABLE_VERSIONS:
        raise CorruptCheckpoint(
            f"{path}: unsupported format_version {version} (this neox reads {READABLE_VERSIONS})"
        )
    return ModelManifest(
        config=ModelConfig.from_dict(body["model_config"]),
        files=tuple(WeightFile(**f) for f in body["files"]),
        tensor_parallel=body["tensor_parallel"],
        tokenizer=body.get("tokenizer"),
        tokenizer_type=body.get("tokenizer_type"),
        merge_file=body.get("merge_file"),
        expert_parallel=body.get("expert_parallel", 1),
    )
