"""launch / describe dispatch, and the master port chosen when none is given."""

import re
import socket
import sys

import pytest

from neox_launch import LaunchSpec, describe, launch
from neox_launch.ports import free_port


def test_describe_quotes_arguments_and_variables():
    spec = LaunchSpec(nproc_per_node=1, master_port=29500, env={"NEOX_TAG": "a b"})
    (line,) = describe(spec, ["python", "train.py", "--name", "my run"])
    assert line.startswith("RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 ")
    assert "MASTER_PORT=29500 OMP_NUM_THREADS=" in line
    assert line.endswith(" NEOX_TAG='a b' python train.py --name 'my run'")


def test_describe_picks_a_port_when_none_is_given():
    lines = describe(LaunchSpec(nproc_per_node=2), ["true"])
    ports = {line.split("MASTER_PORT=")[1].split()[0] for line in lines}
    assert len(ports) == 1 and 1 <= int(ports.pop()) <= 65535


def test_launch_returns_the_workers_exit_code():
    spec = LaunchSpec(nproc_per_node=2)
    code = "import os, sys; sys.exit(3 if os.environ['RANK'] == '1' else 0)"
    assert launch(spec, [sys.executable, "-c", code]) == 3
    assert launch(spec, [sys.executable, "-c", "pass"]) == 0


def test_free_port_can_be_bound():
    port = free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_on_a_foreign_address_is_a_clear_error():
    message = re.escape("cannot open a port on master address '192.0.2.1'")
    with pytest.raises(ValueError, match=message):
        free_port("192.0.2.1")
