"""Hostfiles: the nodes of a cluster and how many workers each runs.

One node per line, ``HOST slots=N`` (the format DeepSpeed and GPT-NeoX read); ``#`` starts a
comment; blank lines are skipped. The file is found from the ``hostfile`` setting, else the
``DLTS_HOSTFILE`` variable, else ``/job/hostfile`` when it exists; without one, workers run on
this machine only.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

HOSTFILE_VARIABLE = "DLTS_HOSTFILE"
DEFAULT_HOSTFILE = Path("/job/hostfile")


class HostfileError(ValueError):
    """A hostfile that cannot be found or read, or a line in it that is malformed."""


@dataclass(frozen=True)
class Host:
    """A node of the hostfile: its name and how many workers (GPUs) it can run."""

    name: str
    slots: int


def parse_hostfile(text: str, source: str = "<hostfile>") -> tuple[Host, ...]:
    """The hosts ``text`` lists, in order; ``source`` names the file in error messages."""
    hosts: list[Host] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host = _parse_line(line, f"{source}:{number}")
        if host.name in first_line:
            raise HostfileError(
                f"{source}:{number}: host {host.name!r} is listed again (first on line "
                f"{first_line[host.name]}); list each host once"
            )
        first_line[host.name] = number
        hosts.append(host)
    if not hosts:
        raise HostfileError(f"{source} lists no hosts; add one line per node, e.g. 'node1 slots=8'")
    return tuple(hosts)


def _parse_line(line: str, where: str) -> Host:
    fields = line.split()
    if len(fields) != 2 or not fields[1].startswith("slots="):
        raise HostfileError(f"{where}: expected 'HOST slots=N', got {line!r}")
    value = fields[1].removeprefix("slots=")
    if not value.isdigit() or int(value) < 1:
        raise HostfileError(f"{where}: slots must be a positive integer, got {value!r}")
    return Host(fields[0], int(value))


def read_hostfile(path: Path) -> tuple[Host, ...]:
    """The hosts of the hostfile at ``path``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HostfileError(f"hostfile {path} not found; fix the path or remove it") from None
    except (OSError, UnicodeDecodeError) as error:
        raise HostfileError(f"cannot read hostfile {path}: {error}") from error
    return parse_hostfile(text, str(path))


def find_hostfile(
    configured: str | None, environ: Mapping[str, str], default: Path = DEFAULT_HOSTFILE
) -> Path | None:
    """The hostfile to use: ``configured``, else $DLTS_HOSTFILE, else ``default`` if it exists.

    A configured or $DLTS_HOSTFILE path that does not exist is an error; None means no hostfile.
    """
    if configured:
        return _existing(Path(configured), "the hostfile setting")
    from_env = environ.get(HOSTFILE_VARIABLE)
    if from_env:
        return _existing(Path(from_env), f"${HOSTFILE_VARIABLE}")
    return default if default.is_file() else None


def _existing(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise HostfileError(f"hostfile {path} (from {origin}) not found; fix the path or unset it")
    return path


def format_hostfile(hosts: Iterable[Host]) -> str:
    """The hostfile text listing ``hosts``."""
    return "".join(f"{host.name} slots={host.slots}\n" for host in hosts)
