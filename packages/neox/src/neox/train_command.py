"""`neox train CONFIG...`: validate the run config once, then start one worker per device; and
`neox check CONFIG...`, which validates the same files at the world size `neox train` would use.

The launch keys (num_gpus, num_nodes, launcher, hostfile, master_port, deepspeed_mpi,
deepspeed_slurm, preemption_*, ...) come from the validated run config and, with the hostfile,
become a `neox_launch.LaunchSpec`; each worker runs `python -m neox_train train` with the same
files. A preemption signal to `neox train` (SIGTERM, SIGINT, SIGUSR1, SIGUSR2 by default) is
passed on to the workers, which save and exit 75; then so does `neox train`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from neox_launch import (
    LaunchRequest,
    LaunchSpec,
    Machine,
    PreemptionPolicy,
    WorkerStartError,
    describe,
    launch,
    plan,
    sbatch_script,
)
from neox_train import (
    ConfigError,
    LaunchConfig,
    RunConfig,
    UserError,
    check_inputs,
    load_run_config,
)


def launch_request(config: LaunchConfig) -> LaunchRequest:
    """The launch keys of a run config as neox-launch's request: its fields by name (a key of
    the launch section each), the preemption policy from `preemption_*`."""
    policy = PreemptionPolicy(config.preemption_grace_period, config.signals)
    return LaunchRequest.from_keys(config, preemption=policy)


def launch_spec(config: LaunchConfig) -> LaunchSpec:
    """The launch spec for a run: its launch keys resolved against the hostfile and this machine
    (a bad hostfile or an impossible selection is a ConfigError, before anything starts)."""
    try:
        return plan(launch_request(config), Machine.current())
    except ValueError as err:
        raise ConfigError(str(err)) from err


def planned(configs: Sequence[str]) -> tuple[RunConfig, LaunchSpec]:
    """The run config of `configs` and where it would run, its batch checked at that world
    size (a UserError otherwise)."""
    run = load_run_config(configs).run
    spec = launch_spec(run.launch)
    run.batch(spec.world_size)
    return run, spec


def worker_command(configs: Sequence[str]) -> list[str]:
    """Each worker trains from the same files (absolute: workers may start elsewhere)."""
    return [sys.executable, "-m", "neox_train", "train", *map(os.path.abspath, configs)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neox train", description="Train a model.")
    parser.add_argument("configs", nargs="+", help="YAML files, merged left to right")
    parser.add_argument("--dry-run", action="store_true", help="print the worker commands")
    parser.add_argument(
        "--sbatch", metavar="FILE", help="write a Slurm batch script for the run instead"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        run, spec = planned(args.configs)
        check_inputs(run)
    except UserError as err:
        return _refuse("neox train", err, args.debug)
    if args.dry_run:
        print("\n".join(describe(spec, worker_command(args.configs))))
        return 0
    if args.sbatch:
        return _write_sbatch(Path(args.sbatch), spec, args.configs)
    where = "on this node" if spec.num_nodes == 1 else f"on {spec.num_nodes} nodes"
    print(f"neox train: starting {spec.world_size} worker(s) {where}", flush=True)
    # The launcher's own lines: a worker that failed, a signal passed on, workers killed.
    logging.basicConfig(level=logging.WARNING, format="neox train: %(message)s")
    try:
        return launch(spec, worker_command(args.configs))
    except WorkerStartError as err:  # e.g. the launcher program is not installed
        print(f"neox train: error: {err}", file=sys.stderr)
        return 1


def check(argv: Sequence[str] | None = None) -> int:
    """`neox check CONFIG... [--world-size N]`: `neox-train check` at the world size `neox train`
    would start when the launch keys or a hostfile decide it (num_gpus x nodes), else at the
    world size `neox-train check` picks (global_num_gpus, or the smallest layout the file
    allows, as `neox plan` does): a file for 96 GPUs is checked, not refused on a laptop."""
    parser = argparse.ArgumentParser(
        prog="neox check", description="Validate configs; print the batch and DeepSpeed JSON."
    )
    parser.add_argument("configs", nargs="+", help="YAML files, merged left to right")
    parser.add_argument("--world-size", type=int, help="default: what `neox train` would start")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    world = [] if args.world_size is None else ["--world-size", str(args.world_size)]
    if not world:
        try:
            world = decided_world_size(args.configs)
        except UserError as err:
            return _refuse("neox check", err, args.debug)
    from neox_train.cli import main as train_cli

    debug = ["--debug"] if args.debug else []
    return train_cli([*debug, "check", *args.configs, *world])


def decided_world_size(configs: Sequence[str]) -> list[str]:
    """["--world-size", N] when num_gpus or a hostfile fixes where `neox train` runs, else []."""
    run = load_run_config(configs).run
    spec = launch_spec(run.launch)
    if run.launch.num_gpus is None and not spec.nodes:
        return []
    run.batch(spec.world_size)
    return ["--world-size", str(spec.world_size)]


def _refuse(prog: str, err: UserError, debug: bool) -> int:
    if debug:
        raise err
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def _write_sbatch(path: Path, spec: LaunchSpec, configs: Sequence[str]) -> int:
    """The run as a Slurm batch script (submit it with sbatch)."""
    machine = Machine.current()
    gpus = spec.nproc_per_node if machine.gpus() else 0  # GPUs are asked for where used
    path.write_text(sbatch_script(spec, worker_command(configs), machine, gpus_per_node=gpus))
    print(f"neox train: wrote {path}; submit it with: sbatch {path}")
    return 0
