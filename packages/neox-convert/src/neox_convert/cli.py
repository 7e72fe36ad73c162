"""`neox-convert`: convert neox checkpoints to and from other formats.

neox-convert to-hf      --input_dir CKPT --output_dir OUT
                        [--architecture neox|llama|mistral|qwen2|qwen3|olmo2|gemma2|
                         mixtral|qwen2_moe]
                        [--config_file YML ...]
neox-convert from-hf    --input_dir HF_DIR --output_dir RUN [--model_parallel_size N]
                        [--pipe_parallel_size N]
neox-convert reshard    --input_dir CKPT --output_dir RUN --model_parallel_size N
                        --pipe_parallel_size M    (weights, and the optimizer state as saved)
neox-convert from-llama --input_dir META_DIR --output_dir RUN [--seq_length N] [--tokenizer F]
neox-convert from-neox  --input_dir GPT_NEOX_STEP --output_dir RUN [--config_file YML ...]

The from-* commands take the layout flags of from-hf; from-* and to-hf take --precision
auto|fp32|fp16|bf16; every command writes its output under a temporary name, renamed into
place only when complete, and takes --overwrite, which replaces only a previous output of the
same conversion (a directory holding other files is refused, naming them).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from neox_convert.architecture import ArchitectureName
from neox_convert.precision import PRECISIONS
from neox_model.checkpoint import CheckpointError

# The function each command runs (imported when it runs): called with the input and output
# directories and every other flag of the command by its name, the layout flags as `layout`.
COMMANDS = {
    "to-hf": ("neox_convert.export", "export_to_hf"),
    "from-hf": ("neox_convert.import_hf", "import_from_hf"),
    "reshard": ("neox_convert.reshard", "reshard"),
    "from-llama": ("neox_convert.meta_llama", "import_from_llama"),
    "from-neox": ("neox_convert.gpt_neox_checkpoint", "import_from_neox"),
}
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, CheckpointError)
FINETUNE_HELP = (
    "writes model weights only (no optimizer state) and a config.yml with finetune: true; "
    "fine-tune with `neox train RUN/global_step0/config.yml your_data.yml`"
)


def _common(parser: argparse.ArgumentParser, input_help: str, precision: bool = True) -> None:
    parser.add_argument("--input_dir", "--input-dir", required=True, help=input_help)
    parser.add_argument("--output_dir", "--output-dir", required=True)
    if precision:
        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="dtype of the written weights (auto: the source's)",
        )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous output of this conversion in output_dir; refused, naming "
        "them, when it holds files the conversion does not write",
    )


def _layout(parser: argparse.ArgumentParser, required: bool = False) -> None:
    for flag, what in (("model_parallel_size", "tensor"), ("pipe_parallel_size", "pipeline")):
        parser.add_argument(
            f"--{flag}",
            f"--{flag.replace('_', '-')}",
            type=int,
            default=None if required else 1,
            required=required,
            help=f"{what}-parallel size of the written checkpoint",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neox-convert", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="export to a Hugging Face model directory")
    _common(to_hf, "checkpoint step directory, or the run directory (its latest step)")
    to_hf.add_argument(
        "--architecture",
        choices=get_args(ArchitectureName),
        default=None,
        help="the Hugging Face architecture (default: the first of "
        f"{', '.join(get_args(ArchitectureName))} that reproduces the checkpoint exactly)",
    )
    to_hf.add_argument(
        "--config_file",
        "--config-file",
        dest="config_files",
        nargs="+",
        default=(),
        help="the run's YAML file(s), merged in order: checked against the checkpoint's "
        "architecture, and their vocab_file used when the checkpoint holds no tokenizer",
    )
    reshard = sub.add_parser(
        "reshard",
        help="change a checkpoint's tensor/pipeline layout",
        description=(
            "Writes the weights at the new layout. A step saved by neox train keeps its "
            "optimizer state, copied as saved under optimizer/ and named by layout.json: "
            "`neox train RUN/STEP/config.yml` resumes from it at any layout (finetune: false). "
            "Without one (an import, ZeRO-3, fp16 without ZeRO) the weights alone are written "
            "and config.yml says finetune: true."
        ),
    )
    _common(reshard, "checkpoint step directory, or the run directory", precision=False)
    _layout(reshard, required=True)
    _import_parsers(sub)
    return parser


def _import_parsers(sub: Any) -> None:
    """from-hf, from-llama and from-neox: a source in, a run directory out."""
    importers = {
        "from-hf": (
            "a GPTNeoX, Llama, Mistral, Qwen2, Qwen3, OLMo 2 or Gemma 2 directory",
            "config.json and weights",
        ),
        "from-llama": ("Meta's original LLaMA 1/2", "params.json and consolidated.XX.pth"),
        "from-neox": ("a checkpoint written by GPT-NeoX", "GPT-NeoX global_stepN, or its save"),
    }
    parsers = {}
    for name, (what, holds) in importers.items():
        parsers[name] = sub.add_parser(name, help=f"import {what}", description=FINETUNE_HELP)
        _common(parsers[name], f"the directory: {holds}")
        _layout(parsers[name])
    parsers["from-llama"].add_argument(
        "--seq_length", "--seq-length", type=int, default=4096, help="longest sequence (positions)"
    )
    parsers["from-llama"].add_argument(
        "--tokenizer", help="tokenizer.model (default: beside the weights or one folder up)"
    )
    parsers["from-neox"].add_argument(
        "--config_file",
        "--config-file",
        dest="config_files",
        nargs="+",
        default=None,
        help="the run's YAML file(s), merged in order (default: STEP/configs/*.yml)",
    )
    parsers["from-neox"].add_argument(
        "--tokenizer", help="the tokenizer file (default: the config's vocab_file)"
    )


def _run(args: argparse.Namespace) -> Path:
    from neox_model import ParallelDims

    options = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
    if "model_parallel_size" in options:
        tensor, pipe = options.pop("model_parallel_size"), options.pop("pipe_parallel_size")
        if tensor < 1 or pipe < 1:
            raise ValueError(f"parallel sizes must be at least 1, got {tensor} and {pipe}")
        options["layout"] = ParallelDims(tensor, pipe)
    module, name = COMMANDS[args.command]
    convert = getattr(importlib.import_module(module), name)
    path: Path = convert(options.pop("input_dir"), options.pop("output_dir"), **options)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[neox] %(message)s", stream=sys.stdout)
    try:
        out = _run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"neox-convert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
