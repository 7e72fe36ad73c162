"""The reference of every config key (name, type, default, meaning), generated from the typed
config itself: the sections of `run_config`, `neox_model.ModelConfig`, the tables of GPT-NeoX
keys that are ignored, refused (by feature) or read under another name, and every GPT-NeoX key
with its status here. `neox-train keys --markdown` writes
it; configs/neox_arguments.md is its output.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from neox_train.config.gpt_neox import (
    FEATURES,
    GPT_NEOX_KEYS,
    IGNORED_KEYS,
    LEGACY_KEYS,
    UNSUPPORTED_KEYS,
)
from neox_train.config.run_config import all_keys, config_sections, model_keys

_TITLE = """# Config keys

Generated from the typed config by `neox-train keys --markdown > configs/neox_arguments.md`;
edit the field documentation in `neox_train/config/sections.py` or `neox_model/config.py`, not
this file. `-` and `_` are the same in key names; nested keys (`optimizer.params.lr`) are written as
nested mappings. Files given together merge left to right (see README.md)."""


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    name: str  # dotted for nested keys
    type: str
    default: str
    meaning: str


def describe_type(hint: Any) -> str:
    """A type hint in words a config author reads: `int or null`, `one of "a", "b"`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        options = [describe_type(a) for a in args if a is not type(None)]
        nullable = " or null" if type(None) in args else ""
        return " or ".join(options) + nullable
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(describe_type(a) for a in args) + "]"
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin is dict or hint is dict:
        return "mapping"
    names = {bool: "bool", int: "int", float: "float", str: "string", Any: "any"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def describe_default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    return json.dumps(_plain(value))


def section_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, list[KeyDoc]]]:
    """(heading, keys) of `cls` and then of each nested section under it, depth first."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if prefix or f.name in _top_level(cls)]
    yield (
        prefix.rstrip("."),
        [
            KeyDoc(
                prefix + f.name,
                describe_type(hints[f.name]),
                describe_default(f),
                f.metadata["doc"],
            )
            for f in fields
        ],
    )
    for f in fields:
        nested = _nested_section(hints[f.name])
        if nested is not None:
            yield from section_keys(nested, f"{prefix}{f.name}.")


def markdown() -> str:
    """The whole reference as Markdown."""
    parts = [_TITLE]
    for name, cls in config_sections():
        for heading, keys in section_keys(cls):
            title = f"`{heading}`" if heading else f"{name} (`{cls.__name__}`)"
            parts.append(f"{'###' if heading else '##'} {title}\n\n{_key_table(keys)}")
    parts.append(_reason_table("GPT-NeoX keys accepted and ignored", IGNORED_KEYS, "why"))
    parts.append(_feature_table())
    parts.append(_reason_table("Other GPT-NeoX spellings", LEGACY_KEYS, "read as"))
    parts.append(_gpt_neox_table())
    return "\n\n".join(parts) + "\n"


def gpt_neox_status(key: str) -> str:
    """What neox does with GPT-NeoX's key `key`: its home, or why it has none."""
    homes = {cls: name for name, cls in config_sections()}
    owner = all_keys().get(key)
    if owner is not None:
        return f"implemented ({homes[owner]})"
    if key in IGNORED_KEYS:
        return "accepted and ignored"
    if key in UNSUPPORTED_KEYS:
        return f"refused unless at GPT-NeoX's default: {UNSUPPORTED_KEYS[key]}"
    if key in LEGACY_KEYS:
        return f"another spelling: {LEGACY_KEYS[key]}"
    raise KeyError(f"GPT-NeoX key {key} has no status in neox")


def _feature_table() -> str:
    rows = [
        "## GPT-NeoX features not supported yet",
        "",
        "Their keys are refused, naming the feature; a key at GPT-NeoX's default (given here) "
        "leaves the feature off and is accepted.",
        "",
        "| feature | keys (GPT-NeoX's default) |",
        "| --- | --- |",
    ]
    for feature in FEATURES:
        keys = ", ".join(f"`{k}` ({json.dumps(v)})" for k, v in feature.keys.items())
        rows.append(f"| {_cell(feature.name)} | {_cell(keys)} |")
    return "\n".join(rows)


def _gpt_neox_table() -> str:
    rows = [
        "## Every GPT-NeoX key",
        "",
        "GPT-NeoX's argument groups and the DeepSpeed keys it passes through, with what neox does.",
        "",
        "| key | GPT-NeoX group | here |",
        "| --- | --- | --- |",
    ]
    for group, keys in GPT_NEOX_KEYS.items():
        rows += [f"| `{key}` | {group} | {_cell(gpt_neox_status(key))} |" for key in keys]
    return "\n".join(rows)


def plain_text() -> str:
    """One line per key: `name: type = default  meaning`."""
    lines = []
    for _, cls in config_sections():
        for _, keys in section_keys(cls):
            lines += [f"{k.name}: {k.type} = {k.default}  {k.meaning}" for k in keys]
    return "\n".join(lines) + "\n"


def _top_level(cls: type) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    return names & set(model_keys()) if cls.__name__ == "ModelConfig" else names


def _nested_section(hint: Any) -> type | None:
    options = [hint, *typing.get_args(hint)]
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(option, type):
            return option
    return None


def _key_table(keys: list[KeyDoc]) -> str:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    rows += [
        f"| `{k.name}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.meaning)} |"
        for k in keys
    ]
    return "\n".join(rows)


def _reason_table(title: str, table: Mapping[str, str], column: str) -> str:
    rows = [f"## {title}", "", f"| key | {column} |", "| --- | --- |"]
    rows += [f"| `{key}` | {_cell(reason)} |" for key, reason in sorted(table.items())]
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
