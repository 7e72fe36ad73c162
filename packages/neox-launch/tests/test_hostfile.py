"""Hostfiles: 'HOST slots=N' lines, where the file comes from, and errors that name the line."""

import pytest

from neox_launch import Host, HostfileError, find_hostfile, format_hostfile, parse_hostfile

TEXT = """\
# the training cluster
node1 slots=8

node2   slots=4   # half a node
  node3 slots=2
"""


def test_hosts_in_order_with_comments_and_blank_lines_skipped():
    hosts = parse_hostfile(TEXT)
    assert hosts == (Host("node1", 8), Host("node2", 4), Host("node3", 2))
    assert parse_hostfile(format_hostfile(hosts)) == hosts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node1 slots=8\nnode2\n", "jobs:2: expected 'HOST slots=N', got 'node2'"),
        (
            "node1 slots=8\nnode2 slots=four\n",
            "jobs:2: slots must be a positive integer, got 'four'",
        ),
        ("node1 slots=0\n", "jobs:1: slots must be a positive integer, got '0'"),
        ("node1 max_slots=2\n", "jobs:1: expected 'HOST slots=N'"),
        ("node1 slots=2 extra\n", "jobs:1: expected 'HOST slots=N'"),
        (
            "node1 slots=2\n\nnode1 slots=4\n",
            "jobs:3: host 'node1' is listed again (first on line 1)",
        ),
        ("# nothing\n\n", "jobs lists no hosts"),
    ],
)
def test_a_malformed_hostfile_names_the_line(text, message):
    with pytest.raises(HostfileError) as error:
        parse_hostfile(text, "jobs")
    assert message in str(error.value)


def test_the_configured_file_wins_then_the_variable_then_the_default(tmp_path):
    configured, from_env, default = (tmp_path / name for name in ("a", "b", "c"))
    for path in (configured, from_env, default):
        path.write_text("node1 slots=1\n")
    environ = {"DLTS_HOSTFILE": str(from_env)}
    assert find_hostfile(str(configured), environ, default) == configured
    assert find_hostfile(None, environ, default) == from_env
    assert find_hostfile(None, {}, default) == default
    assert find_hostfile(None, {}, tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("configured", "environ", "origin"),
    [
        ("/nonexistent/hosts", {}, "the hostfile setting"),
        (None, {"DLTS_HOSTFILE": "/nonexistent/hosts"}, "$DLTS_HOSTFILE"),
    ],
)
def test_a_named_hostfile_that_is_missing_is_an_error(configured, environ, origin):
    with pytest.raises(HostfileError) as error:
        find_hostfile(configured, environ)
    assert f"/nonexistent/hosts (from {origin}) not found" in str(error.value)
