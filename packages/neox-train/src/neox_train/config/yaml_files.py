"""The run config's YAML files, read and merged by neox-model's reader (`neox_model.config_files`,
shared with neox-eval and neox-convert), its errors raised as `ConfigError`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from neox_model import config_files
from neox_model.config_files import MergedYaml, Override, normalise_key
from neox_train.config.schema import ConfigError

__all__ = ["MergedYaml", "Override", "load_yaml", "merge_files", "normalise_key"]


@contextmanager
def _as_config_error() -> Iterator[None]:
    try:
        yield
    except config_files.ConfigFileError as err:
        raise ConfigError(str(err)) from err


def load_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping with normalised keys (recursively)."""
    with _as_config_error():
        return config_files.load_yaml(path)


def merge_files(paths: Sequence[str | Path]) -> MergedYaml:
    """Merge config files left to right, recording origins and overrides."""
    with _as_config_error():
        return config_files.merge_files(paths)
