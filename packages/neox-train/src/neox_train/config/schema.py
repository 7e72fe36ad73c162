"""Turning plain YAML values into typed, frozen config dataclasses.

A section is a frozen dataclass; its field names are config keys and its type hints are the
schema. `build` checks every value against its hint (int, float, bool, str, Literal, unions with
None, list/tuple, dict, nested dataclasses) and reports every problem, one line each, as a
`ConfigError` naming the key, the value, what was expected and the file it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, cast

T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix (a config, a file, a flag, the machine): the command line
    prints its message as one line, without a traceback, and exits 2. Subclass it for errors a
    user can cause; anything else is a bug and is shown with its traceback."""


class SaidOnRankZero(UserError):
    """A user error that rank 0 reports for the whole run (it decided for every rank): the
    other ranks stop with it without repeating it."""


class ConfigError(UserError, ValueError):
    """A problem in a user's config: the message says what, where, and what to do."""


def closest(key: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


Where = Callable[[str], str]  # dotted key -> the file it came from


def build(cls: type[T], values: Mapping[str, Any], where: Where, prefix: str = "") -> T:
    """Instantiate section `cls` from `values`; `where(key)` names the file of a key.

    `prefix` is the dotted path of a nested section ("optimizer.params."). A ConfigError names
    every unknown, missing or mistyped key of the section, one line each.
    """
    hints = typing.get_type_hints(cls)
    known = field_names(cls)
    problems = [_unknown(key, known, prefix, where) for key in values if key not in known]
    kwargs = {}
    for field in dataclasses.fields(cast(Any, cls)):
        key = prefix + field.name
        if field.name in values:
            try:
                kwargs[field.name] = convert(values[field.name], hints[field.name], key, where)
            except ConfigError as err:
                problems.append(str(err))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{where(key)}: required key {key!r} is missing")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where(prefix.rstrip('.'))}: {err}") from err


def _unknown(key: str, known: list[str], prefix: str, where: Where) -> str:
    hint = closest(key, known)
    tip = f"; did you mean {prefix + hint!r}?" if hint else f"; valid: {', '.join(known)}"
    return f"{where(prefix + key)}: unknown key {prefix + key!r}{tip}"


def convert(value: Any, hint: Any, key: str, where: Where) -> Any:
    """Check `value` against type `hint` and return it in that type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise _type_error(key, value, f"a mapping of {', '.join(field_names(hint))}", where)
        return build(hint, value, where, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, args, key, where)
    if origin is Literal:
        if value not in args:
            raise _type_error(key, value, f"one of {', '.join(map(repr, args))}", where)
        return value
    if origin in (list, tuple):
        return _convert_sequence(value, origin, args, key, where)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, value, "a mapping", where)
        return dict(value)
    return _convert_scalar(value, hint, key, where)


def _convert_union(value: Any, args: tuple[Any, ...], key: str, where: Where) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
        try:
            return convert(value, option, key, where)
        except ConfigError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    raise _type_error(key, value, " or ".join(_describe(o) for o in options), where)


def _convert_sequence(
    value: Any, origin: type, args: tuple[Any, ...], key: str, where: Where
) -> Any:
    if not isinstance(value, list | tuple):
        raise _type_error(key, value, "a list", where)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _type_error(key, value, f"a list of {len(args)} values", where)
        return tuple(convert(v, a, key, where) for v, a in zip(value, args, strict=True))
    item = args[0] if args else Any
    items = [convert(v, item, key, where) for v in value]
    return tuple(items) if origin is tuple else items


def _convert_scalar(value: Any, hint: Any, key: str, where: Where) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # e.g. train_iters: 1e5
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    raise _type_error(key, value, _describe(hint), where)


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def _type_error(key: str, value: Any, expected: str, where: Where) -> ConfigError:
    return ConfigError(f"{where(key)}: {key} must be {expected}, got {value!r}")
