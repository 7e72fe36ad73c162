"""`neox-train`: one training worker, text generation, and a config check.

    neox-train train CONFIG...       one rank of a run (RANK/WORLD_SIZE/MASTER_* from the
                                     launcher; without them, a single-process run)
    neox-train generate --checkpoint DIR --prompt TEXT [...]
    neox-train check CONFIG... [--world-size N]   validate; print the batch and DeepSpeed JSON
                                     (world size: num_gpus x num_nodes, as `plan`)
    neox-train plan CONFIG... [--num-gpus N] [--gpu-memory GiB] [--vocab-size N]
                    [--gpu NAME] [--achievable F] [--pick-layout [--gpus-per-node N]]
                                     parameters, memory per GPU, batch math, FLOPs per step,
                                     predicted step time / tokens/s / MFU, the best layout
    neox-train keys [--markdown]     every config key: type, default, meaning

Most users run `neox train`, which validates the config once and starts the workers.

An error is printed by the process that hit it, after `rank N:` in a job of several ranks: a
user error (`UserError` and the other packages' own) as one line with exit code 2, a bug with its
traceback and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from neox_data import DamagedInputError, MissingDependencyError, NoSpaceError
from neox_model import CheckpointError
from neox_model.checkpoint import is_disk_full
from neox_train.config.run_config import LoadedConfig, RunConfig, load_run_config
from neox_train.config.schema import ConfigError, SaidOnRankZero, UserError

# Errors a user can cause, printed as one line: neox-train's own, and the packages' below it.
USER_ERRORS = (
    UserError,
    CheckpointError,
    MissingDependencyError,
    NoSpaceError,
    DamagedInputError,
    FileNotFoundError,
    FileExistsError,
)
# Runs that stopped for a reason that is not a bug (HungRank, Diverged): one line, exit code 1.
_RUN_STOPPED = ("HungRank", "Diverged")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neox-train", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one training worker")
    train.add_argument("configs", nargs="+", help="YAML files, merged left to right")
    gen = sub.add_parser(
        "generate", help="sample from a checkpoint (text_gen_type, or one --prompt)"
    )
    gen.add_argument("configs", nargs="*", help="run config (text generation keys, load)")
    gen.add_argument("--checkpoint", help="run or step directory; default: the config's load")
    gen.add_argument("--prompt", help="continue this text once and print it")
    gen.add_argument("--max-new-tokens", type=int, help="overrides maximum_tokens")
    gen.add_argument("--temperature", type=float, help="overrides temperature (0 = greedy)")
    gen.add_argument("--top-k", type=int, help="overrides top_k")
    gen.add_argument("--top-p", type=float, help="overrides top_p")
    gen.add_argument("--seed", type=int, help="overrides seed")
    check = sub.add_parser("check", help="validate configs and print what a run would use")
    check.add_argument("configs", nargs="+")
    check.add_argument("--world-size", type=int, help="default: the launch keys, as `plan`")
    plan = sub.add_parser("plan", help="memory per GPU and FLOPs per step, without a model")
    plan.add_argument("configs", nargs="+", help="YAML files, merged left to right")
    plan.add_argument("--num-gpus", type=int, help="GPUs in all; default: the launch keys")
    plan.add_argument("--gpu-memory", type=float, help="GiB per GPU; default: this GPU's")
    plan.add_argument("--vocab-size", type=int, help="default: from the config's tokenizer")
    plan.add_argument(
        "--gpu", help="GPU model for the speed prediction; default: this GPU's, else A100"
    )
    plan.add_argument(
        "--achievable",
        type=float,
        help="fraction of peak the compute runs at; default: GPT-NeoX-20B's measured 0.41",
    )
    plan.add_argument(
        "--pick-layout", action="store_true", help="plan every layout of the GPUs; pick one"
    )
    plan.add_argument(
        "--gpus-per-node", type=int, default=8, help="tensor parallelism stays within"
    )
    keys = sub.add_parser("keys", help="every config key with its type, default and meaning")
    keys.add_argument("--markdown", action="store_true", help="as configs/neox_arguments.md")
    return parser


def report(loaded: LoadedConfig) -> None:
    """Say once which values later files overrode, which older GPT-NeoX spellings were read as
    today's keys, and which GPT-NeoX keys are ignored."""
    log = logging.getLogger("neox_train.config")
    for override in loaded.overrides:
        log.info("override %s", override)
    for line in loaded.rewritten:
        log.info("older key %s", line)
    for line in loaded.ignored:
        log.info("ignored key %s", line)


def _train(configs: list[str]) -> int:
    from neox_train.parallel.distributed import DistEnv, init_distributed

    env = DistEnv.from_environ(os.environ)
    _configure_logging(env.rank)
    loaded = load_run_config(configs)
    loaded.run.batch(env.world_size)  # fail on a bad layout before anything starts
    if env.rank == 0:
        report(loaded)
    _quiet_deepspeed()
    from neox_train.loop.preemption import PREEMPTED, Preempted, Preemption
    from neox_train.loop.trainer import setup, train

    # From here on a preemption signal stops the run after a step (and a save), never mid-step.
    with Preemption(loaded.run.launch.signals) as preemption:
        device = init_distributed(env, loaded.run.parallel.distributed_timeout_minutes)
        session = setup(loaded.run, env, device)
        try:
            train(session, preemption)
        except Preempted:
            return PREEMPTED
    return 0


def _generate(args: argparse.Namespace) -> int:
    from neox_train.generation.command import run_generation
    from neox_train.parallel.distributed import DistEnv

    env = DistEnv.from_environ(os.environ)
    _configure_logging(env.rank)
    return run_generation(args, env)


def _check(configs: list[str], world_size: int | None) -> int:
    from neox_train.engine.deepspeed_config import deepspeed_config

    loaded = load_run_config(configs)
    _configure_logging(0)
    report(loaded)
    world, source = _world_size(world_size, loaded.run)
    batch = loaded.run.batch(world)
    print(f"world size: {world} ({source})")
    print(f"batch: {batch}")
    print("deepspeed config:", json.dumps(deepspeed_config(loaded.run, batch), indent=2))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from neox_train.planning.layouts import describe_pick, pick_layout
    from neox_train.planning.plan import describe, make_plan, planning_vocab
    from neox_train.planning.prediction import ACHIEVABLE

    loaded = load_run_config(args.configs)
    run = loaded.run
    if run.parallel.pipe_parallel_size > 1:
        _quiet_deepspeed()  # its pipeline partitioning is imported from DeepSpeed
    vocab, source = planning_vocab(run, args.vocab_size)
    world, memory = _world_size(args.num_gpus, run)[0], _gpu_memory(args.gpu_memory)
    gpu, achievable = args.gpu or _gpu_name(), args.achievable or ACHIEVABLE
    if args.pick_layout:
        if memory is None:
            raise ConfigError("--pick-layout needs --gpu-memory GiB (no GPU here to read it from)")
        picked, plans = pick_layout(run, vocab, world, memory, args.gpus_per_node, gpu, achievable)
        print(describe_pick(picked, plans, world))
        return 0
    plan = make_plan(run, vocab, world, memory, gpu, achievable)
    print(describe(plan, run, source))
    return 0


def _gpu_name() -> str:
    """This machine's GPU when its peak is known, else the A100 the default fraction is from."""
    import torch

    from neox_train.monitoring.flops import peak_tflops
    from neox_train.planning.prediction import DEFAULT_GPU

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if peak_tflops(name, None) is not None:
            return name
    return DEFAULT_GPU


def _world_size(given: int | None, run: RunConfig) -> tuple[int, str]:
    """(world size, where it came from): `given` (a flag), else num_gpus x num_nodes from the
    config, else global_num_gpus, else the smallest layout the file allows (`neox check` passes
    the world size `neox train` would start when the launch keys or a hostfile decide it)."""
    if given is not None:
        return given, "given"
    launch = run.launch
    if launch.num_gpus is not None:
        return launch.num_gpus * max(launch.num_nodes, 1), "num_gpus x num_nodes"
    if launch.global_num_gpus:
        return launch.global_num_gpus, "global_num_gpus"
    return run.smallest_world_size, "the smallest layout the file allows"


def _gpu_memory(gib: float | None) -> int | None:
    if gib is not None:
        if gib <= 0:
            raise ConfigError(f"--gpu-memory must be positive GiB, got {gib}")
        return int(gib * 2**30)
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def _keys(markdown: bool) -> int:
    from neox_train.config.key_reference import markdown as reference
    from neox_train.config.key_reference import plain_text

    sys.stdout.write(reference() if markdown else plain_text())
    return 0


def _configure_logging(rank: int) -> None:
    """neox's own messages at INFO on rank 0 only; other libraries' at WARNING."""
    logging.basicConfig(
        level=logging.WARNING, format="[neox] %(message)s", stream=sys.stdout, force=True
    )
    logging.getLogger("neox_train").setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _quiet_deepspeed() -> None:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed warns that it guessed
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as err:
        return _report(err, debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    match args.command:
        case "train":
            return _train(args.configs)
        case "generate":
            return _generate(args)
        case "check":
            return _check(args.configs, args.world_size)
        case "plan":
            return _plan(args)
        case "keys":
            return _keys(args.markdown)
    raise AssertionError(f"unhandled command {args.command}")


def _report(err: Exception, *, debug: bool) -> int:
    """Print `err` as this rank saw it (a bug with its traceback, anything else in one line;
    --debug adds the traceback); the exit code."""
    rank = int(os.environ.get("RANK", 0))
    line, code = _one_line(err)
    if debug or line is None:
        traceback.print_exception(err)
    if line is None:
        line = f"{type(err).__name__}: {err} (a bug: the traceback is above)"
    said_once = type(err).__name__ == "Diverged" or isinstance(err, SaidOnRankZero)
    if not said_once or rank == 0:  # the same on every rank: said once
        _error_line(rank, line)
    return code


def _one_line(err: Exception) -> tuple[str | None, int]:
    """The message and exit code of an error that is not a bug: a user error (2), a run that
    hung or diverged (1), a collective whose other end went away (PEER_LOST, 76); (None, 1) for
    a bug."""
    if isinstance(err, USER_ERRORS):
        return str(err), 2
    if isinstance(err, OSError) and is_disk_full(err, err.filename or "."):
        return f"no space left on device writing {err.filename or 'a file'}: free space there", 2
    if type(err).__name__ in _RUN_STOPPED:
        return str(err), 1
    if isinstance(err, RuntimeError):
        from neox_train.parallel.watchdog import PEER_LOST, lost_rank

        lost = lost_rank(err)
        if lost is not None:
            return f"another rank went away ({lost}); its own error is the cause", PEER_LOST
    return None, 1


def _error_line(rank: int, message: str) -> None:
    """`neox-train: error: MESSAGE`, naming the rank in a job of several; one such line per
    line of MESSAGE (a config with several problems)."""
    ranked = f"rank {rank}: " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    for line in message.splitlines() or [""]:
        print(f"neox-train: {ranked}error: {line}", file=sys.stderr, flush=True)
