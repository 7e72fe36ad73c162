"""Choosing nodes and devices: include/exclude filters, num_nodes, num_gpus."""

import pytest

from neox_launch import Host, Node, parse_filter, select_nodes

HOSTS = (Host("node1", 4), Host("node2", 4), Host("node3", 4))


def test_filters_parse_hosts_and_device_numbers():
    assert parse_filter("node1:0,2@node2") == {"node1": (0, 2), "node2": None}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node1:@node2", "expected 'HOST'"),
        ("@node2", "expected 'HOST'"),
        ("node1:a", "must be integers"),
        ("node1@node1:2", "names host 'node1' twice"),
    ],
)
def test_bad_filters_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_filter(text)


def test_everything_by_default_in_hostfile_order():
    assert select_nodes(HOSTS) == tuple(Node(host.name, (0, 1, 2, 3)) for host in HOSTS)


def test_include_keeps_what_it_names():
    nodes = select_nodes(HOSTS, include="node3:1,3@node1:0,2")
    assert nodes == (Node("node1", (0, 2)), Node("node3", (1, 3)))


def test_exclude_drops_hosts_and_devices():
    nodes = select_nodes(HOSTS, exclude="node2@node3:0", num_gpus=3)
    assert nodes == (Node("node1", (0, 1, 2)), Node("node3", (1, 2, 3)))


def test_num_nodes_and_num_gpus_take_the_first():
    assert select_nodes(HOSTS, num_nodes=2, num_gpus=1) == (
        Node("node1", (0,)),
        Node("node2", (0,)),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_nodes": 4}, "num_nodes=4 but only 3 node"),
        ({"num_gpus": 8}, "num_gpus=8 workers per node, but node1 has 4"),
        ({"include": "node4"}, "include names host 'node4', which the hostfile does not list"),
        ({"include": "node1:7"}, r"device\(s\) \[7\] of 'node1', which has slots=4"),
        ({"exclude": "node1:0"}, "same number of workers.*node1: 3, node2: 4"),
        ({"include": "node1", "exclude": "node2"}, "use one of them"),
        ({"exclude": "node1@node2@node3"}, "leaves no devices"),
    ],
)
def test_impossible_selections_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_nodes(HOSTS, **kwargs)
