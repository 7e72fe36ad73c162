"""The environment that travels to workers on other nodes.

Remote workers start from a fresh login, so a launcher sends them: the variables of a
``.deepspeed_env`` file (``NAME=VALUE`` lines, in the home directory, then the working
directory, the later winning), the variables the launch spec sets, and from the launching
environment ``PATH``, ``LD_LIBRARY_PATH``, ``VIRTUAL_ENV`` and every ``NCCL_*``, ``PYTHON*``,
``UCX_*`` and ``FI_*`` variable (so the same venv, import path and network settings apply).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_FILE_NAME = ".deepspeed_env"
PROPAGATED_NAMES = ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
PROPAGATED_PREFIXES = ("NCCL_", "PYTHON", "UCX_", "FI_")


def parse_env_file(text: str, source: str = ENV_FILE_NAME) -> dict[str, str]:
    """The ``NAME=VALUE`` lines of ``text``; ``#`` comment lines and blank lines are skipped.

    The value is everything after the first ``=``, as written (no quotes are removed).
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier():
            raise ValueError(f"{source}:{number}: expected 'NAME=VALUE', got {raw!r}")
        values[name] = value
    return values


def read_env_files(directories: Sequence[str | Path]) -> dict[str, str]:
    """The variables of the env files in ``directories`` that exist, later files winning."""
    values: dict[str, str] = {}
    seen: set[Path] = set()
    for directory in directories:
        path = Path(directory) / ENV_FILE_NAME
        if path.resolve() in seen or not path.is_file():
            continue
        seen.add(path.resolve())
        values.update(parse_env_file(path.read_text(), str(path)))
    return values


def propagated_env(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The variables to send to remote workers: the propagated ones of ``environ``, then
    ``extra`` (the launch spec's env), sorted by name with ``extra`` last."""
    picked = {
        name: value
        for name, value in sorted(environ.items())
        if name in PROPAGATED_NAMES or name.startswith(PROPAGATED_PREFIXES)
    }
    for name in extra:
        picked.pop(name, None)
    return {**picked, **extra}
