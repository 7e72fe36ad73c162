"""Where a checkpoint keeps the model: a `model.json` manifest beside the weight files.

The trainer writes the manifest into each checkpoint step directory, naming the architecture
(`ModelConfig`), the files that hold the model's state dict and the key inside them. Readers
(generation, export, evaluation) load the model from the manifest alone, without the trainer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_model.config import ModelConfig
from neox_model.transformer import Transformer

MANIFEST = "model.json"
LATEST = "latest"  # in a run directory: the name of the newest complete step directory
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelManifest:
    config: ModelConfig
    files: tuple[str, ...]  # relative to the step directory
    state_dict_key: str  # key of the state dict inside each file ("" = the file is the dict)
    tokenizer: str | None = None  # relative path of the tokenizer file, if saved

    def to_json(self) -> str:
        body = {
            "format_version": FORMAT_VERSION,
            "model_config": self.config.to_dict(),
            "files": list(self.files),
            "state_dict_key": self.state_dict_key,
            "tokenizer": self.tokenizer,
        }
        return json.dumps(body, indent=2) + "\n"


def write_manifest(step_dir: str | Path, manifest: ModelManifest) -> Path:
    """Write `model.json` atomically (temporary file, then rename)."""
    path = Path(step_dir) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, path)
    return path


def read_manifest(step_dir: str | Path) -> ModelManifest:
    path = Path(step_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {step_dir} is not a neox checkpoint step")
    body = json.loads(path.read_text())
    if body.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {body.get('format_version')}")
    return ModelManifest(
        config=ModelConfig.from_dict(body["model_config"]),
        files=tuple(body["files"]),
        state_dict_key=body["state_dict_key"],
        tokenizer=body.get("tokenizer"),
    )


def find_step_dir(path: str | Path) -> Path:
    """A checkpoint step directory, given itself or its run directory (then `latest` is used)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    pointer = path / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"{path} holds no neox checkpoint (no {MANIFEST}, no {LATEST})")
    step_dir = path / pointer.read_text().strip()
    if not (step_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{pointer} points at {step_dir}, which is not a complete step")
    return step_dir


def load_state_dict(path: str | Path) -> tuple[Path, ModelManifest, dict[str, torch.Tensor]]:
    """The step directory, manifest and full model state dict (on CPU) of a checkpoint.

    `path` is a step directory or a run directory (its `latest` step is read).
    """
    step_dir = find_step_dir(path)
    manifest = read_manifest(step_dir)
    state: dict[str, Any] = {}
    for name in manifest.files:
        # DeepSpeed model files hold non-tensor objects (its config, client state) as well
        blob = torch.load(Path(step_dir) / name, map_location="cpu", weights_only=False)
        state.update(blob[manifest.state_dict_key] if manifest.state_dict_key else blob)
    return step_dir, manifest, state


def load_model(path: str | Path) -> tuple[Path, ModelManifest, Transformer]:
    """A `Transformer` with the weights of a checkpoint (step or run directory), on CPU, in
    eval mode."""
    step_dir, manifest, state = load_state_dict(path)
    model = Transformer(manifest.config)
    model.load_state_dict(state)
    return step_dir, manifest, model.eval()
