"""Which nodes and devices a job uses: the hostfile narrowed by include/exclude, num_nodes and
num_gpus.

Filters use DeepSpeed's syntax: ``node1:0,1@node2`` means devices 0 and 1 of node1 and all of
node2. ``include`` keeps only what it names; ``exclude`` drops what it names (a host without
device numbers is dropped whole). Nodes keep their hostfile order, which is their rank order.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neox_launch.hostfile import Host

# host -> the device numbers named, or None for the whole host
Filter = Mapping[str, tuple[int, ...] | None]


@dataclass(frozen=True)
class Node:
    """A node of the job and the device numbers its workers use, one worker per device."""

    host: str
    devices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))


def parse_filter(text: str, name: str = "include") -> dict[str, tuple[int, ...] | None]:
    """``node1:0,1@node2`` as ``{"node1": (0, 1), "node2": None}``; ``name`` is for errors."""
    selected: dict[str, tuple[int, ...] | None] = {}
    for part in text.split("@"):
        host, colon, numbers = part.strip().partition(":")
        if not host or (colon and not numbers.strip()):
            raise ValueError(f"{name}={text!r}: expected 'HOST' or 'HOST:0,1' between '@'")
        if host in selected:
            raise ValueError(f"{name}={text!r} names host {host!r} twice; name it once")
        selected[host] = _device_numbers(numbers, text, name) if colon else None
    return selected


def _device_numbers(numbers: str, text: str, name: str) -> tuple[int, ...]:
    items = [item.strip() for item in numbers.split(",")]
    if not all(item.isdigit() for item in items):
        raise ValueError(f"{name}={text!r}: device numbers must be integers, got {numbers!r}")
    return tuple(sorted({int(item) for item in items}))


def select_nodes(
    hosts: Sequence[Host],
    *,
    include: str = "",
    exclude: str = "",
    num_nodes: int = -1,
    num_gpus: int | None = None,
) -> tuple[Node, ...]:
    """The nodes of ``hosts`` a job runs on; every node runs the same number of workers.

    ``num_nodes`` (-1: all) keeps the first nodes; ``num_gpus`` (None: all slots) the first
    devices of each. Asking for more than the hostfile has is an error.
    """
    if include and exclude:
        raise ValueError(
            f"include={include!r} and exclude={exclude!r} are both set; use one of them"
        )
    pool = {host.name: tuple(range(host.slots)) for host in hosts}
    if include:
        pool = _included(pool, parse_filter(include, "include"))
    elif exclude:
        pool = _excluded(pool, parse_filter(exclude, "exclude"))
    nodes = [Node(host, devices) for host, devices in pool.items() if devices]
    if not nodes:
        raise ValueError(f"include/exclude ({include or exclude!r}) leaves no devices to run on")
    nodes = _first_nodes(nodes, num_nodes)
    if num_gpus is not None:
        nodes = _first_devices(nodes, num_gpus)
    _check_uniform(nodes)
    return tuple(nodes)


def _included(pool: dict[str, tuple[int, ...]], wanted: Filter) -> dict[str, tuple[int, ...]]:
    _check_known(pool, wanted, "include")
    return {
        host: devices if wanted[host] is None else tuple(wanted[host] or ())
        for host, devices in pool.items()
        if host in wanted
    }


def _excluded(pool: dict[str, tuple[int, ...]], unwanted: Filter) -> dict[str, tuple[int, ...]]:
    _check_known(pool, unwanted, "exclude")
    kept: dict[str, tuple[int, ...]] = {}
    for host, devices in pool.items():
        dropped = unwanted.get(host, ())
        if dropped is not None:
            kept[host] = tuple(device for device in devices if device not in dropped)
    return kept


def _check_known(pool: Mapping[str, tuple[int, ...]], named: Filter, name: str) -> None:
    for host, devices in named.items():
        if host not in pool:
            raise ValueError(
                f"{name} names host {host!r}, which the hostfile does not list "
                f"(it lists: {', '.join(pool)})"
            )
        missing = sorted(set(devices or ()) - set(pool[host]))
        if missing:
            raise ValueError(
                f"{name} names device(s) {missing} of {host!r}, which has slots={len(pool[host])} "
                f"(devices 0..{len(pool[host]) - 1})"
            )


def _first_nodes(nodes: list[Node], num_nodes: int) -> list[Node]:
    if num_nodes == -1:
        return nodes
    if num_nodes > len(nodes):
        raise ValueError(
            f"num_nodes={num_nodes} but only {len(nodes)} node(s) are available "
            f"({', '.join(node.host for node in nodes)}); lower num_nodes or add hosts"
        )
    return nodes[:num_nodes]


def _first_devices(nodes: list[Node], num_gpus: int) -> list[Node]:
    short = [node for node in nodes if len(node.devices) < num_gpus]
    if short:
        listed = ", ".join(f"{node.host} has {len(node.devices)}" for node in short)
        raise ValueError(
            f"num_gpus={num_gpus} workers per node, but {listed}; lower num_gpus or "
            "raise the slots in the hostfile"
        )
    return [Node(node.host, node.devices[:num_gpus]) for node in nodes]


def _check_uniform(nodes: Sequence[Node]) -> None:
    counts = {len(node.devices) for node in nodes}
    if len(counts) > 1:
        listed = ", ".join(f"{node.host}: {len(node.devices)}" for node in nodes)
        raise ValueError(
            f"every node must run the same number of workers, but the selection gives {listed}; "
            f"set num_gpus to at most {min(counts)} or change the hostfile / include / exclude"
        )
