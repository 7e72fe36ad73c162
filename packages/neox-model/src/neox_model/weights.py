"""Where a checkpoint keeps the model: a `model.json` manifest beside the weight files.

The trainer writes the manifest into each checkpoint step directory: the architecture
(`ModelConfig`), the tensor-parallel size the weights were saved at, and every file holding a
piece of the model's state dict, with the tensor-parallel rank it belongs to and how its names
map to the `Transformer`'s (a pipeline layer file holds `block.*` for `layers.3.*`). Readers
(generation, export, evaluation) rebuild the full model from the manifest alone, without the
trainer, whatever the layout it was trained with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neox_model.config import ModelConfig
from neox_model.tensor_parallel import TPGroup, shard, shard_spec, unshard
from neox_model.transformer import Transformer

MANIFEST = "model.json"
DERIVED_BUFFERS = ("rotary.inv_freq",)  # saved with rotary_save_freqs_buffer, else recomputed
LATEST = "latest"  # in a run directory: the name of the newest complete step directory
FORMAT_VERSION = 2
# DeepSpeed's names for the model files of a step: one per tensor-parallel rank, or with a
# pipeline one per layer and rank; neox checkpoints keep them so that DeepSpeed loads them
MODEL_FILE = re.compile(r"mp_rank_(\d+)_model_states\.pt$")
LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")


def model_file_name(tp_rank: int) -> str:
    return f"mp_rank_{tp_rank:02d}_model_states.pt"


def layer_file_name(layer: int, tp_rank: int) -> str:
    return f"layer_{layer:02d}-model_{tp_rank:02d}-model_states.pt"


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
    tokenizer: str | None = None  # relative path of the tokenizer file, if saved

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
        files=tuple(WeightFile(**f) for f in body["files"]),
        tensor_parallel=body["tensor_parallel"],
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


def _rank_states(step_dir: Path, manifest: ModelManifest) -> list[dict[str, torch.Tensor]]:
    """Every tensor-parallel rank's state dict, under the Transformer's names."""
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(manifest.tensor_parallel)]
    for weight_file in manifest.files:
        # DeepSpeed model files hold non-tensor objects (its config, client state) as well
        blob: Any = torch.load(step_dir / weight_file.file, map_location="cpu", weights_only=False)
        state = blob[weight_file.key] if weight_file.key else blob
        for name, tensor in state.items():
            ranks[weight_file.tp_rank][weight_file.model_name(name)] = tensor
    return ranks


def tensor_parallel_specs(config: ModelConfig, tensor_parallel: int) -> dict[str, tuple[int, int]]:
    """(dim, chunks) of every `Transformer` parameter split over `tensor_parallel` ranks, by
    name; parameters every rank holds whole are left out. Raises ValueError when the model does
    not split over that many ranks."""
    with torch.device("meta"):  # only to learn how each parameter is split
        model = Transformer(config, tp=TPGroup(None, 0, tensor_parallel))
    specs = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            spec = shard_spec(module, name)
            if spec is not None:
                specs[f"{module_name}.{name}" if module_name else name] = spec
    return specs


def load_state_dict(path: str | Path) -> tuple[Path, ModelManifest, dict[str, torch.Tensor]]:
    """The step directory, manifest and full model state dict (on CPU) of a checkpoint, the
    tensor-parallel shards joined. `path` is a step directory or a run directory."""
    step_dir = find_step_dir(path)
    manifest = read_manifest(step_dir)
    ranks = _rank_states(step_dir, manifest)
    if manifest.tensor_parallel == 1:
        return step_dir, manifest, ranks[0]
    specs = tensor_parallel_specs(manifest.config, manifest.tensor_parallel)
    full = {}
    for name, tensor in ranks[0].items():
        spec = specs.get(name)
        full[name] = unshard([r[name] for r in ranks], *spec) if spec else tensor
    return step_dir, manifest, full


def load_model(
    path: str | Path, tp: TPGroup | None = None
) -> tuple[Path, ModelManifest, Transformer]:
    """A `Transformer` with the weights of a checkpoint (step or run directory), in eval mode,
    at tensor-parallel size 1 or, with `tp`, as that rank's shard."""
    tp = tp or TPGroup.single()
    step_dir, manifest, state = load_state_dict(path)
    with torch.device("meta"):  # no time spent initialising weights that are overwritten
        model = Transformer(manifest.config, tp=tp, padded_vocab=manifest.padded_vocab)
    model.to_empty(device="cpu")
    reset_buffers(model)
    if tp.size > 1:
        state = {name: _shard_for(model, name, tensor, tp) for name, tensor in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - set(DERIVED_BUFFERS) or unexpected:  # derived buffers were just recomputed
        raise ValueError(
            f"{step_dir}: the checkpoint does not fit its model.json: missing "
            f"{sorted(set(missing) - set(DERIVED_BUFFERS))}, unexpected {sorted(unexpected)}"
        )
    return step_dir, manifest, model.eval()


def _shard_for(model: Transformer, name: str, tensor: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    module_name, _, param = name.rpartition(".")
    spec = shard_spec(model.get_submodule(module_name), param)
    return shard(tensor, tp, *spec) if spec else tensor


def reset_buffers(model: torch.nn.Module) -> None:
    """Recompute the derived buffers (rotary and sinusoidal frequencies, ALiBi slopes) of a
    model allocated with `to_empty`."""
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if reset is not None:
            reset()
