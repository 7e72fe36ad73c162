"""The runner dispatch: one entry point to start, or describe, a launch with any launcher."""

from collections.abc import Sequence
from typing import assert_never

from neox_launch.local import describe_local, run_local
from neox_launch.spec import LaunchSpec


def launch(spec: LaunchSpec, command: Sequence[str]) -> int:
    """Start ``command`` as the workers ``spec`` describes and wait; the launcher's exit code."""
    match spec.launcher:
        case "local":
            return run_local(spec, command)
        case unknown:
            assert_never(unknown)


def describe(spec: LaunchSpec, command: Sequence[str]) -> list[str]:
    """What ``launch`` would start, as shell lines (one per process); starts nothing.

    A free master port is picked now when ``spec.master_port`` is None; ``launch`` picks its own.
    """
    match spec.launcher:
        case "local":
            return describe_local(spec, command)
        case unknown:
            assert_never(unknown)
