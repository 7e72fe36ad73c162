"""Slurm node lists (``node[01-03,07],login1``): expanded to host names, and turned into hosts.

A bracket holds comma-separated numbers and ranges; a range keeps the zero padding of its start
(``n[08-10]`` is n08 n09 n10). Several brackets in one name expand to every combination.
"""

from collections.abc import Iterator, Mapping

from neox_launch.hostfile import Host

NODELIST_VARIABLES = ("SLURM_JOB_NODELIST", "SLURM_NODELIST")
# Where the workers per node come from, most specific first.
_SLOTS_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_NTASKS_PER_NODE")


def expand_nodelist(expression: str) -> list[str]:
    """The host names of a Slurm node list expression, in order."""
    names = [name for part in _top_level_parts(expression) for name in _expand(part, expression)]
    if not names:
        raise ValueError(f"node list {expression!r} names no hosts")
    return names


def _top_level_parts(expression: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(expression):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            yield expression[start:index].strip()
            start = index + 1
    yield expression[start:].strip()


def _expand(part: str, expression: str) -> list[str]:
    if not part:
        return []
    open_at = part.find("[")
    close_at = part.find("]", open_at + 1)
    if open_at < 0 and "]" not in part:
        return [part]
    if open_at < 0 or close_at < 0:
        raise ValueError(f"node list {expression!r} has an unbalanced bracket in {part!r}")
    prefix, body, rest = part[:open_at], part[open_at + 1 : close_at], part[close_at + 1 :]
    tails = _expand(rest, expression) if rest else [""]
    return [prefix + item + tail for item in _bracket_items(body, expression) for tail in tails]


def _bracket_items(body: str, expression: str) -> Iterator[str]:
    for item in body.split(","):
        low, dash, high = item.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"node list {expression!r}: {item!r} is not a number or range")
        if not dash:
            yield low
            continue
        if int(high) < int(low):
            raise ValueError(f"node list {expression!r}: range {item!r} runs backwards")
        for number in range(int(low), int(high) + 1):
            yield str(number).zfill(len(low))


def slurm_hosts(environ: Mapping[str, str], slots: int | None = None) -> tuple[Host, ...]:
    """The hosts of the current Slurm job, ``slots`` workers each.

    The nodes come from $SLURM_JOB_NODELIST; without ``slots``, from $SLURM_GPUS_ON_NODE or
    $SLURM_NTASKS_PER_NODE.
    """
    nodelist = next((environ[name] for name in NODELIST_VARIABLES if environ.get(name)), None)
    if nodelist is None:
        raise ValueError(
            "SLURM_JOB_NODELIST is not set; run this inside a Slurm job (sbatch or salloc)"
        )
    count = slots if slots is not None else _slots_from(environ)
    if count < 1:
        raise ValueError(f"slots={count} must be at least 1")
    return tuple(Host(name, count) for name in expand_nodelist(nodelist))


def _slots_from(environ: Mapping[str, str]) -> int:
    for name in _SLOTS_VARIABLES:
        value = environ.get(name, "")
        # SLURM_NTASKS_PER_NODE may read "2(x3)"; every node has the same count then.
        digits = value.split("(", 1)[0]
        if digits.isdigit():
            return int(digits)
    raise ValueError(
        "cannot tell the workers per node: neither SLURM_GPUS_ON_NODE nor "
        "SLURM_NTASKS_PER_NODE is set; give the slots explicitly"
    )
