"""The ``neox-data`` command: train a tokenizer, tokenize a corpus into token files."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from neox_data.corpus import MissingDependencyError, iter_documents
from neox_data.preprocess import preprocess
from neox_data.tokenizer import TokenizerSpec, train_bpe_tokenizer

PROG = "neox-data"
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, MissingDependencyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train a tokenizer; tokenize a corpus into Megatron token files."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Subcommands accept --debug too; SUPPRESS keeps them from resetting the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    _add_train_tokenizer(commands, common)
    _add_preprocess(commands, common)
    return parser


def _add_train_tokenizer(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    sub = commands.add_parser(
        "train-tokenizer", parents=[common], help="train a byte-level BPE tokenizer.json"
    )
    sub.add_argument("--input", required=True, help="comma-separated files or globs")
    sub.add_argument("--jsonl-keys", nargs="+", default=["text"], help="JSON keys to read")
    sub.add_argument("--vocab-size", type=int, required=True, help="vocabulary size")
    sub.add_argument("--output", required=True, help="path of the tokenizer.json to write")
    sub.set_defaults(run=_run_train_tokenizer)


def _add_preprocess(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "preprocess", parents=[common], help="tokenize a corpus into .bin/.idx token files"
    )
    sub.add_argument("--input", required=True, help="comma-separated files or globs")
    sub.add_argument("--jsonl-keys", nargs="+", default=["text"], help="JSON keys to tokenize")
    sub.add_argument("--num-docs", type=int, help="expected document count (progress bar only)")
    sub.add_argument("--tokenizer-type", default="HFTokenizer", help="tokenizer type")
    sub.add_argument("--vocab-file", required=True, help="tokenizer file (tokenizer.json)")
    sub.add_argument("--merge-file", help="BPE merges file (unused by HFTokenizer)")
    sub.add_argument("--append-eod", action="store_true", help="end each document with EOD")
    sub.add_argument("--output-prefix", required=True, help="writes PREFIX_{key}_document.bin/.idx")
    sub.add_argument("--dataset-impl", choices=["mmap"], default="mmap", help="output format")
    sub.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    sub.add_argument("--log-interval", type=int, default=100, help="progress update interval")
    sub.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sub.set_defaults(run=_run_preprocess)


def _run_train_tokenizer(args: argparse.Namespace) -> None:
    texts = (document.text for document in iter_documents(args.input, args.jsonl_keys))
    tokenizer = train_bpe_tokenizer(texts, args.vocab_size, args.output)
    print(f"wrote {tokenizer.path} ({tokenizer.vocab_size} tokens)")


def _run_preprocess(args: argparse.Namespace) -> None:
    spec = TokenizerSpec(args.tokenizer_type, args.vocab_file, args.merge_file)
    result = preprocess(
        args.input,
        args.output_prefix,
        spec,
        jsonl_keys=args.jsonl_keys,
        append_eod=args.append_eod,
        num_docs=args.num_docs,
        workers=args.workers,
        overwrite=args.overwrite,
        log_interval=args.log_interval,
    )
    for prefix in result.outputs.values():
        print(f"wrote {prefix}.bin and {prefix}.idx")
    print(result.summary())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    try:
        args.run(args)
    except _USER_ERRORS as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
