"""Optional dependencies: imported on first use; if missing, an error names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional dependency is needed; the message names the extra to install."""


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise `MissingDependencyError` saying ``pip install neox-data[extra]``.

    ``purpose`` completes the sentence "<purpose> needs the <module> package".
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the {module} package: pip install 'neox-data[{extra}]'"
        ) from None
