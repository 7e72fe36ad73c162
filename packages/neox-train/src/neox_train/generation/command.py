"""The `generate` command: which checkpoint, which settings, which mode.

Settings come from the text generation keys of the checkpoint's saved config with the given
files merged over it, overridden by flags. With several processes (a launcher's RANK/WORLD_SIZE)
the model is tensor-parallel over all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from neox_data import Tokenizer, build_tokenizer
from neox_model import (
    LaunchEnv,
    TPGroup,
    Transformer,
    join_process_group,
    load_model,
    read_manifest,
    verified_step,
)
from neox_model.checkpoint import RUN_CONFIG
from neox_train.config.run_config import RunConfig, load_run_config
from neox_train.config.schema import ConfigError
from neox_train.config.sections import TextGenConfig
from neox_train.config.yaml_files import merge_files
from neox_train.generation.modes import batch_samples, interactive, sample, write_samples

log = logging.getLogger(__name__)


def _run_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The checkpoint's own config with the given files merged over it (they may hold only
    the text generation keys and `load`)."""
    given = merge_files(args.configs).values if args.configs else {}
    checkpoint = args.checkpoint or given.get("load")
    if not checkpoint:
        raise ConfigError("generate needs a checkpoint: --checkpoint DIR or `load` in the config")
    step_dir, _ = verified_step(checkpoint)
    return load_run_config([step_dir / RUN_CONFIG, *args.configs]).run, step_dir


def _settings(run: RunConfig, args: argparse.Namespace) -> TextGenConfig:
    flags = {
        "maximum_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }
    return dataclasses.replace(
        run.text_generation, **{k: v for k, v in flags.items() if v is not None}
    )


def _load(step_dir: Path, run: RunConfig, env: LaunchEnv) -> tuple[Transformer, Tokenizer]:
    tp = TPGroup.single()
    if env.world_size > 1:
        join_process_group(env)
        tp = TPGroup.of(None)
    if read_manifest(step_dir).config.value_head:  # said before any weight is read
        raise ConfigError(
            f"{step_dir} is a reward model (a score per position): it generates no text"
        )
    _, manifest, model = load_model(step_dir, tp=tp, verified=True)
    data = run.data
    vocab = step_dir / manifest.tokenizer if manifest.tokenizer else None
    merges = step_dir / Path(data.merge_file).name if data.merge_file else None
    return model, build_tokenizer(data.tokenizer_type, vocab, merges)


def run_generation(args: argparse.Namespace, env: LaunchEnv) -> int:
    run, step_dir = _run_config(args)
    settings = _settings(run, args)
    model, tokenizer = _load(step_dir, run, env)
    seed = args.seed if args.seed is not None else run.training.seed
    generator = torch.Generator().manual_seed(seed)
    if args.prompt is not None:
        done = sample(model, tokenizer, args.prompt, settings, generator)
        if env.rank == 0:
            print(args.prompt + done.text)
        return 0
    match settings.text_gen_type:
        case "unconditional" | "input-file":
            count = write_samples(
                batch_samples(model, tokenizer, settings, generator),
                settings.sample_output_file,
                env.rank,
            )
            log.info("wrote %d samples to %s", count, settings.sample_output_file)
        case "interactive":
            interactive(
                model,
                tokenizer,
                settings,
                generator,
                input,
                lambda text: print(text, end="", flush=True),
                env.rank,
            )
        case None:
            raise ConfigError(
                "set text_gen_type (unconditional, input-file, interactive) or pass --prompt"
            )
    sys.stdout.flush()
    return 0
