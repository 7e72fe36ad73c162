"""`neox`: the single command; each sub-command is one package's CLI.

neox train CONFIG...          validate, then start the workers (neox-launch + neox-train)
neox generate ...             sample from a checkpoint (neox-train)
neox check CONFIG...          validate a config, print batch math and DeepSpeed JSON
                              (at the world size neox train would use) [--world-size N]
neox plan CONFIG...           parameters, memory per GPU, batch math and FLOPs per step
                              [--num-gpus N] [--gpu-memory GiB] [--vocab-size N]
neox data ...                 tokenizers and token files (neox-data)
neox convert ...              HF / Meta LLaMA / GPT-NeoX import and export, reshard
neox eval ...                 lm-eval adapter (neox-eval)
neox launch ...               start any command on N workers (neox-launch)
neox demo                     the end-to-end CPU demo
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _train(argv: list[str]) -> int:
    from neox.train_command import main

    return main(argv)


def _check(argv: list[str]) -> int:
    from neox.train_command import check

    return check(argv)


def _train_cli(command: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        from neox_train.cli import main

        return main([command, *argv])

    return run


def _package(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return int(importlib.import_module(module).main(argv))

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _train,
    "generate": _train_cli("generate"),
    "check": _check,
    "plan": _train_cli("plan"),
    "data": _package("neox_data.cli"),
    "convert": _package("neox_convert.cli"),
    "eval": _package("neox_eval.cli"),
    "launch": _package("neox_launch.cli"),
    "demo": _package("neox.demo"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(
            f"neox: error: unknown command {args[0]!r}; one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    return command(args[1:])
