"""The node agent: ``python -m neox_launch.agent [options] -- command [args...]``.

The pdsh runner starts one agent per node over SSH. The agent starts that node's workers with
their global ranks (the local runner's ``node_workers``) and supervises them: a failing worker
stops the others and becomes the agent's exit code. With ``--watch-stdin``, the end of stdin
(the SSH session closed because the launcher stopped pdsh) asks the workers to save and stop,
as a preemption signal does (``--preemption-grace-period``, ``--preemption-signals``).
"""

import argparse
import logging
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import fields

from neox_launch import preemption
from neox_launch.local import NodePlacement, node_workers
from neox_launch.supervisor import WorkerStartError, supervise

PROG = "neox_launch.agent"


class StdinWatch:
    """Tells, without blocking, whether stdin has reached its end (input is read and dropped)."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.ended = False

    def __call__(self) -> str | None:
        """The reason to stop (stdin ended), or None; the supervisor's stop check."""
        while not self.ended:
            try:
                readable, _, _ = select.select([self.fd], [], [], 0)
                if not readable:
                    break
                self.ended = not os.read(self.fd, 65536)
            except OSError:
                self.ended = True
        return "the launcher's connection closed (stdin ended)" if self.ended else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        usage="%(prog)s [options] -- command [args...]",
        description="Start and supervise one node's workers of a multi-node job.",
    )
    parser.add_argument("--node-rank", type=int, required=True)
    parser.add_argument("--num-nodes", type=int, required=True)
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("--master-addr", required=True)
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--visible-devices", help="CUDA_VISIBLE_DEVICES for this node's workers")
    parser.add_argument("--watch-stdin", action="store_true", help="stop when stdin ends")
    preemption.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run this node's workers; the first failing worker's exit code, else 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    options, command = _parser().parse_args(args[:cut]), args[cut + 1 :]
    logging.basicConfig(
        level=logging.INFO, format=f"neox-launch node {options.node_rank}: %(message)s"
    )
    try:
        # the placement flags are named as its fields
        placement = NodePlacement(
            **{f.name: getattr(options, f.name) for f in fields(NodePlacement)}
        )
        commands = node_workers(placement, command, env=os.environ)
        stop_check = StdinWatch() if options.watch_stdin else None
        policy = preemption.from_args(options)
        return supervise(commands, policy=policy, stdin=subprocess.DEVNULL, stop_check=stop_check)
    except (ValueError, TypeError, WorkerStartError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
