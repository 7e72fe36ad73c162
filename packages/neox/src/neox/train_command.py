"""`neox train CONFIG...`: validate the run config once, then start one worker per device.

The launch keys (num_gpus, num_nodes, launcher, hostfile, master_port) come from the validated
run config and become a `neox_launch.LaunchSpec`; each worker runs `python -m neox_train train`
with the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from neox_launch import LaunchSpec, count_local_gpus, describe, launch
from neox_train import ConfigError, load_run_config
from neox_train.inputs import check_inputs
from neox_train.run_config import LaunchConfig


def launch_spec(config: LaunchConfig) -> LaunchSpec:
    """The launch spec for a run, refusing what the local launcher cannot do yet."""
    if config.hostfile or config.num_nodes > 1:
        raise ConfigError(
            f"hostfile {config.hostfile!r} / num_nodes {config.num_nodes}: multi-node launch is "
            "not supported yet; remove hostfile and set num_nodes to 1"
        )
    if config.launcher not in ("pdsh", "local") or config.deepspeed_mpi or config.deepspeed_slurm:
        raise ConfigError(
            f"launcher {config.launcher!r} is not supported yet; on one node use 'local'"
        )
    workers = config.num_gpus or count_local_gpus() or 1
    return LaunchSpec(nproc_per_node=workers, master_port=config.master_port)


def worker_command(configs: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "neox_train", "train", *configs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neox train", description="Train a model.")
    parser.add_argument("configs", nargs="+", help="YAML files, merged left to right")
    parser.add_argument("--dry-run", action="store_true", help="print the worker commands")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        run = load_run_config(args.configs).run
        spec = launch_spec(run.launch)
        run.batch(spec.world_size)
        check_inputs(run)
    except (ConfigError, ValueError) as err:
        if args.debug:
            raise
        print(f"neox train: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(describe(spec, worker_command(args.configs))))
        return 0
    print(f"neox train: starting {spec.world_size} worker(s) on this node", flush=True)
    return launch(spec, worker_command(args.configs))
