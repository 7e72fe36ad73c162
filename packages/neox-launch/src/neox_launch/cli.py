"""The ``neox-launch`` command: ``neox-launch [options] -- command args...``."""

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from neox_launch.devices import count_local_gpus
from neox_launch.runner import describe, launch
from neox_launch.spec import LaunchSpec
from neox_launch.supervisor import WorkerStartError

PROG = "neox-launch"
USAGE_ERROR = 2
START_ERROR = 1


class UsageError(Exception):
    """A bad flag, flag value or command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += "; put the worker command after '--'"
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options] -- command [args...]",
        description="Start one worker per device on this machine, each with RANK, LOCAL_RANK, "
        "WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. If a worker fails, "
        "the others are stopped and its exit code is returned.",
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        metavar="N",
        help="workers to start (default: the number of visible GPUs, or 1 without GPUs)",
    )
    parser.add_argument(
        "--master-port", type=int, metavar="P", help="rendezvous port (default: a free port)"
    )
    parser.add_argument(
        "--master-addr", default="127.0.0.1", metavar="A", help="rendezvous address (%(default)s)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the worker commands; start nothing"
    )
    parser.add_argument(
        "--debug", action="store_true", help="debug logging, and tracebacks on errors"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    options, command = _split(args)
    try:
        return _run(options, command)
    except (UsageError, ValueError, TypeError, WorkerStartError) as error:
        if "--debug" in options:
            traceback.print_exc()
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return START_ERROR if isinstance(error, WorkerStartError) else USAGE_ERROR


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """The launcher's options and the worker command, split at the first ``--``."""
    if "--" not in args:
        return args, []
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


def _run(options: list[str], command: list[str]) -> int:
    try:
        args = _parser().parse_args(options)
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    if not command:
        raise UsageError(
            "no command given; put it after '--', "
            f"e.g. {PROG} --nproc-per-node 2 -- python train.py"
        )
    spec = LaunchSpec(
        nproc_per_node=_nproc_per_node(args.nproc_per_node),
        master_addr=args.master_addr,
        master_port=args.master_port,
    )
    if args.dry_run:
        for line in describe(spec, command):
            print(line)
        return 0
    return launch(spec, command)


def _nproc_per_node(flag: int | None) -> int:
    """The flag's value, else one worker per visible GPU, else one worker."""
    if flag is not None:
        return flag
    return count_local_gpus() or 1
