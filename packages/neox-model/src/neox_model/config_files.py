"""Reading and merging GPT-NeoX-style YAML config files: the one reader neox-train, neox-eval
and neox-convert share (every package that reads a run config depends on neox-model).

Files merge left to right: later keys win, nested mappings merge key by key, and every
overridden value is recorded once. Keys are normalised (`-` and `_` are the same key). Within
one file a key given twice in one mapping (`-` and `_` spellings included) is an error naming
both lines: plain YAML keeps the later value without a word. Numbers written as `3e-4` are
floats here (plain YAML 1.1 reads them as strings).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigFileError(ValueError):
    """A config file that cannot be read, is not YAML, not a mapping, or repeats a key; the
    message starts with the file's path."""


# YAML 1.1's float pattern requires a dot; this one also accepts 1e-4, 3E+5, 6e4.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver also accepts exponent-only numbers."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


@dataclass(frozen=True)
class Override:
    key: str  # dotted path, e.g. "optimizer.params.lr"
    old: Any
    new: Any
    source: str  # the file that set the new value

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r} ({self.source})"


@dataclass(frozen=True)
class MergedYaml:
    values: dict[str, Any]  # normalised keys
    origins: dict[str, str]  # top-level key -> file that last set it
    overrides: tuple[Override, ...]


def normalise_key(key: object) -> str:
    return str(key).replace("-", "_")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping with normalised keys (recursively)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigFileError(f"{path}: cannot read config file ({err.strerror})") from err
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        repeat = _first_repeat(node, "", set()) if node is not None else None
        doc = loader.construct_document(node) if node is not None and repeat is None else None
        loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{path}: not valid YAML: {err}") from err
    if repeat is not None:
        raise ConfigFileError(f"{path}: {repeat}")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigFileError(f"{path}: a config file must be a mapping of keys to values")
    return _normalise(doc)


def _first_repeat(node: yaml.Node, where: str, seen: set[int]) -> str | None:
    """The first key given twice in one mapping under `node`, with both lines (`-` and `_`
    spellings are one key; YAML merge keys are not repeats)."""
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
            key = normalise_key(key_node.value)
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


def _normalise(mapping: dict[Any, Any]) -> dict[str, Any]:
    """Keys with `-` read as `_`, at every level (`_first_repeat` has refused collisions)."""
    return {
        normalise_key(key): _normalise(value) if isinstance(value, dict) else value
        for key, value in mapping.items()
    }


def merge_files(paths: Sequence[str | Path]) -> MergedYaml:
    """Merge config files left to right, recording origins and overrides."""
    if not paths:
        raise ConfigFileError("no config files given")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    overrides: list[Override] = []
    for path in paths:
        doc = load_yaml(path)
        _merge_into(values, doc, str(path), "", overrides)
        origins.update(dict.fromkeys(doc, str(path)))
    return MergedYaml(values, origins, tuple(overrides))


def _merge_into(
    base: dict[str, Any], new: dict[str, Any], source: str, prefix: str, log: list[Override]
) -> None:
    for key, value in new.items():
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            _merge_into(old, value, source, f"{prefix}{key}.", log)
            continue
        if key in base and old != value:
            log.append(Override(prefix + key, old, value, source))
        base[key] = value
