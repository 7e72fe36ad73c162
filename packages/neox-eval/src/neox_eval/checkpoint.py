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
from neox_model import ModelManifest, TPGroup, Transformer, load_model, verified_step

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
        text = path.read_text()
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read config file ({err.strerror})") from err
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        repeat = _first_repeat(node, "", set()) if node is not None else None
        doc = loader.construct_document(node) if node is not None and repeat is None else None
        loader.dispose()
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if repeat is not None:
        raise ValueError(f"{path}: {repeat}")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a config file must be a mapping of keys to values")
    return _normalised(doc)


def _first_repeat(node: yaml.Node, where: str, seen: set[int]) -> str | None:
    """The first key given twice in one mapping under `node`, with both lines (`-` and `_`
    spellings are one key; YAML merge keys are not repeats). neox-train's reader
    (`neox_train.config.yaml_files`) has its twin; tests/test_yaml_repeats.py holds them to one
    answer."""
    if id(node) in seen:  # an alias of a node already checked
        return None
    seen.add(id(node))
    children: list[tuple[str, yaml.Node]] = []
    if isinstance(node, yaml.SequenceNode):
        children = [(f"{where.removesuffix('.')}[{i}].", item) for i, item in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        keys: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value.replace("-", "_")
            if key in keys:
                first, second = keys[key], key_node
                lines = f"lines {first.start_mark.line + 1} and {second.start_mark.line + 1}"
                if first.value != second.value:
                    lines += f": {first.value} and {second.value} are one key"
                return f"key {where + key!r} appears twice ({lines})"
            keys[key] = key_node
            children.append((f"{where}{key}.", value))
    for path, child in children:
        found = _first_repeat(child, path, seen)
        if found is not None:
            return found
    return None


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
    step_dir, _ = verified_step(path)
    saved = step_dir / RUN_CONFIG
    config = read_config([saved]) if saved.is_file() else {}
    _merge(config, overrides or {})
    _, manifest, model = load_model(step_dir, tp=tp, verified=True)
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
