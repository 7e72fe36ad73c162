"""The checkpoint to evaluate: its model, tokenizer and the run settings evaluation reads.

A step directory holds `model.json` (read by neox-model, whatever layout the weights were saved
in: tensor-parallel shards, pipeline layer files), the tokenizer file the manifest names, and
`config.yml`, the run config as flat GPT-NeoX-style YAML. Config files given on the command line
are merged over that saved config (later files win, nested mappings merged, `-` and `_` in keys
equivalent); from the result evaluation reads `tokenizer_type`, `merge_file`, `seq_length` and
`train_micro_batch_size_per_gpu`, and the command reads `load`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neox_data import Tokenizer, build_tokenizer
from neox_model import ModelManifest, TPGroup, Transformer, find_step_dir, load_model

RUN_CONFIG = "config.yml"  # the run config neox-train saves into every step directory
DEFAULT_TOKENIZER_TYPE = "GPT2BPETokenizer"  # GPT-NeoX's default


@dataclass(frozen=True)
class LoadedCheckpoint:
    step_dir: Path
    model: Transformer  # on the CPU, in eval mode; this rank's shard under tensor parallelism
    tokenizer: Tokenizer
    seq_length: int
    micro_batch_size: int | None  # train_micro_batch_size_per_gpu, if the config sets it


def read_config(paths: Sequence[str | Path]) -> dict[str, Any]:
    """YAML config files merged left to right (later keys win, nested mappings merged)."""
    merged: dict[str, Any] = {}
    for path in paths:
        _merge(merged, _read_yaml(Path(path)))
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read config file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a config file must be a mapping of keys to values")
    return _normalised(doc)


def _normalised(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Keys with `-` read as `_` (GPT-NeoX accepts both), at every level."""
    return {
        str(key).replace("-", "_"): _normalised(value) if isinstance(value, dict) else value
        for key, value in mapping.items()
    }


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_checkpoint(
    path: str | Path, *, tp: TPGroup | None = None, overrides: Mapping[str, Any] | None = None
) -> LoadedCheckpoint:
    """The checkpoint at `path` (a step directory, or a run directory whose `latest` step is
    used), as one tensor-parallel rank's shard with `tp`; `overrides` (config values) are merged
    over the step's saved config."""
    step_dir = find_step_dir(path)
    saved = step_dir / RUN_CONFIG
    config = read_config([saved]) if saved.is_file() else {}
    _merge(config, overrides or {})
    _, manifest, model = load_model(step_dir, tp=tp)
    micro_batch = config.get("train_micro_batch_size_per_gpu")
    return LoadedCheckpoint(
        step_dir=step_dir,
        model=model,
        tokenizer=_tokenizer(step_dir, manifest, config),
        seq_length=int(config.get("seq_length") or model.config.seq_length),
        micro_batch_size=int(micro_batch) if micro_batch else None,
    )


def _tokenizer(step_dir: Path, manifest: ModelManifest, config: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer saved with the checkpoint: the manifest names its (vocabulary) file, and a
    GPT-2 merges file is saved beside it under its own name."""
    vocab = step_dir / manifest.tokenizer if manifest.tokenizer else None
    merge_file = config.get("merge_file")
    merges = step_dir / Path(merge_file).name if merge_file else None
    tokenizer_type = config.get("tokenizer_type") or DEFAULT_TOKENIZER_TYPE
    return build_tokenizer(tokenizer_type, vocab, merges)
