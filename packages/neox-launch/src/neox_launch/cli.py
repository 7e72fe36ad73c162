"""The ``neox-launch`` command (also ``neox launch``): ``neox-launch [options] -- command...``.

Starts the command as the workers of a job (see ``request.plan`` for how the options resolve),
prints what it would start (``--dry-run``), writes an sbatch script for the job (``--sbatch``)
or a hostfile of the current Slurm job (``--write-hostfile``).
"""

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from neox_launch import preemption
from neox_launch.hostfile import format_hostfile
from neox_launch.machine import Machine
from neox_launch.nodelist import slurm_hosts
from neox_launch.request import LaunchRequest, plan
from neox_launch.runner import describe, launch
from neox_launch.slurm import sbatch_script
from neox_launch.spec import LAUNCHERS
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
        description="Start the command as the workers of a job, each with RANK, LOCAL_RANK, "
        "WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. If a worker fails, "
        "the others are stopped and its exit code is returned. SIGTERM, SIGINT, SIGUSR1 or "
        "SIGUSR2 asks the workers to save and stop; when they all exit 75, so does this.",
    )
    _placement_options(parser)
    _launcher_options(parser)
    _output_options(parser)
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks")
    return parser


def _placement_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the workers run")
    group.add_argument(
        "--num-gpus",
        "--nproc-per-node",
        dest="num_gpus",
        type=int,
        metavar="N",
        help="workers per node (default: the hostfile's slots, else the visible GPUs, else 1)",
    )
    group.add_argument("--num-nodes", type=int, default=-1, metavar="N", help="-1: all nodes")
    group.add_argument("--hostfile", metavar="PATH", help="'HOST slots=N' lines")
    group.add_argument("--include", default="", metavar="F", help="e.g. node1:0,1@node2")
    group.add_argument("--exclude", default="", metavar="F", help="e.g. node3@node4:7")
    group.add_argument("--master-addr", metavar="A", help="host of rank 0")
    group.add_argument("--master-port", type=int, metavar="P", help="rendezvous port")


def _launcher_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("how they are started")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="pdsh",
        help="pdsh (the default) runs locally without a hostfile",
    )
    group.add_argument("--launcher-args", default="", metavar="ARGS", help="extra launcher flags")
    group.add_argument("--no-ssh-check", action="store_true", help="pdsh: skip the SSH check")
    group.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="worker variable"
    )
    for name in ("comment", "account", "partition"):
        group.add_argument(f"--{name}", metavar="TEXT", help=f"Slurm {name}")
    preemption.add_arguments(group)


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("instead of starting")
    group.add_argument("--dry-run", action="store_true", help="print the commands; start nothing")
    group.add_argument("--sbatch", metavar="FILE", help="write an sbatch script for the job")
    group.add_argument("--gpus-per-node", type=int, default=0, metavar="G", help="for --sbatch")
    group.add_argument("--job-name", default="neox", help="for --sbatch (%(default)s)")
    group.add_argument(
        "--write-hostfile", metavar="FILE", help="write the Slurm job's nodes as a hostfile"
    )
    group.add_argument("--slots", type=int, metavar="N", help="for --write-hostfile")


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
    machine = Machine.current()
    if args.write_hostfile:
        return _write(
            Path(args.write_hostfile), format_hostfile(slurm_hosts(machine.environ, args.slots))
        )
    if not command:
        raise UsageError(
            f"no command given; put it after '--', e.g. {PROG} --num-gpus 2 -- python train.py"
        )
    if args.sbatch and args.launcher not in ("pdsh", "slurm"):
        raise UsageError(f"--sbatch writes a Slurm job; it cannot use --launcher {args.launcher}")
    spec = plan(_request(args, "slurm" if args.sbatch else args.launcher), machine)
    if args.sbatch:
        script = sbatch_script(
            spec, command, machine, gpus_per_node=args.gpus_per_node, job_name=args.job_name
        )
        return _write(Path(args.sbatch), script, f"; submit it with: sbatch {args.sbatch}")
    if args.dry_run:
        print("\n".join(describe(spec, command, machine)))
        return 0
    return launch(spec, command, machine)


def _request(args: argparse.Namespace, launcher: str) -> LaunchRequest:
    """The flags are named as the launch keys of a run config (`LaunchRequest.from_keys`)."""
    env = dict(_assignment(item) for item in args.env)
    return LaunchRequest.from_keys(
        args, launcher=launcher, env=env, preemption=preemption.from_args(args)
    )


def _assignment(item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise UsageError(f"--env {item!r}: expected NAME=VALUE")
    return name, value


def _write(path: Path, text: str, hint: str = "") -> int:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from error
    print(f"{PROG}: wrote {path}{hint}")
    return 0
