"""The ``neox-data`` command: tokenizers, preprocessing, token files, public corpora."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from neox_data.atomic_file import NoSpaceError
from neox_data.chat import DEFAULT_CHAT_KEYS, ChatOptions, preprocess_chat
from neox_data.corpus import iter_documents
from neox_data.dependency import MissingDependencyError
from neox_data.hf_tokenizer import train_bpe_tokenizer
from neox_data.preprocess import TOKENIZER_ENGINES, preprocess
from neox_data.public_corpora import PUBLIC_CORPORA, download_corpus
from neox_data.report import describe
from neox_data.token_file import TokenFile, merge_token_files
from neox_data.tokenizer import SUPPORTED_TOKENIZER_TYPES, TokenizerSpec, build_tokenizer

PROG = "neox-data"
# Exit statuses. A failed or interrupted run never leaves a .bin/.idx pair at its output names.
EXIT_OK = 0
EXIT_FAILURE = 1  # the run broke: I/O error, a worker process died, an unexpected error
EXIT_USAGE = 2  # the user's input: bad flag, missing, malformed or truncated file, bad line,
# existing output, a full disk
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM
_USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    MissingDependencyError,
    NoSpaceError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a tokenizer; tokenize a corpus into Megatron token files; "
        "inspect and merge token files.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Subcommands accept --debug too; SUPPRESS keeps them from resetting the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    _add_train_tokenizer(commands, common)
    _add_preprocess(commands, common)
    _add_preprocess_chat(commands, common)
    _add_inspect(commands, common)
    _add_merge(commands, common)
    _add_download(commands, common)
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
    _add_tokenizer_options(sub)
    sub.add_argument("--append-eod", action="store_true", help="end each document with EOD")
    sub.add_argument("--output-prefix", required=True, help="writes PREFIX_{key}_document.bin/.idx")
    sub.add_argument("--dataset-impl", choices=["mmap"], default="mmap", help="output format")
    sub.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    sub.add_argument("--log-interval", type=int, default=100, help="progress update interval")
    sub.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sub.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="count and skip malformed JSON lines instead of stopping at the first",
    )
    sub.add_argument("--ftfy", action="store_true", help="fix mojibake with ftfy (extra: ftfy)")
    sub.add_argument(
        "--tokenizer-engine",
        choices=TOKENIZER_ENGINES,
        default="auto",
        help="auto: encode byte-level BPE with tiktoken when it gives the same ids (default)",
    )
    sub.add_argument(
        "--mask-before-token",
        type=_token_ids,
        metavar="ID[,ID...]",
        help="also write PREFIX_label_document: labels -100 (no loss) up to and including the "
        "first occurrence of these token ids in each document",
    )
    sub.set_defaults(run=_run_preprocess)


def _add_preprocess_chat(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    sub = commands.add_parser(
        "preprocess-chat",
        parents=[common],
        help="conversations through the tokenizer's chat template into token and label files",
        description="GPT-NeoX's preprocess_data_with_chat_template.py: writes "
        "PREFIX_{key}_document and PREFIX_{key}_label_document (labels -100 outside the "
        "generation role's turns) for each JSON key holding a conversation.",
    )
    sub.add_argument("--input", required=True, help="comma-separated JSON-lines files or globs")
    sub.add_argument(
        "--jsonl-keys",
        nargs="+",
        default=list(DEFAULT_CHAT_KEYS),
        help="keys holding conversations (default messages; chosen rejected for preference pairs)",
    )
    sub.add_argument(
        "--tokenizer-path",
        required=True,
        help="tokenizer directory: tokenizer.json and tokenizer_config.json with a chat_template",
    )
    sub.add_argument("--output-prefix", required=True, help="writes PREFIX_{key}_document ...")
    sub.add_argument(
        "--generation-role", default="assistant", help="the role whose turns are learned"
    )
    sub.add_argument("--only-last", action="store_true", help="label the last turn only")
    sub.add_argument("--no-mask", action="store_true", help="label every token")
    sub.add_argument(
        "--for-rm", action="store_true", help="label only the final EOS (reward model data)"
    )
    sub.add_argument(
        "--reward-key",
        help="JSON key of each conversation's reward (true / false: +1 / -1, or a number), "
        "written per labelled token to PREFIX_{key}_reward_document for KTO "
        "(train_reward_data_paths)",
    )
    sub.add_argument("--num-docs", type=int, help="expected conversations (progress bar only)")
    sub.add_argument("--dataset-impl", choices=["mmap"], default="mmap", help="output format")
    sub.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sub.set_defaults(run=_run_preprocess_chat)


def _run_preprocess_chat(args: argparse.Namespace) -> None:
    options = ChatOptions(args.generation_role, not args.no_mask, args.only_last, args.for_rm)
    result = preprocess_chat(
        args.input,
        args.output_prefix,
        args.tokenizer_path,
        jsonl_keys=args.jsonl_keys,
        options=options,
        num_docs=args.num_docs,
        overwrite=args.overwrite,
        reward_key=args.reward_key,
    )
    for prefix in result.outputs.values():
        print(f"wrote {prefix}.bin and {prefix}.idx")
    print(result.summary())


def _token_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token ids such as 50,1270, got {text!r}"
        ) from None


def _add_tokenizer_options(
    sub: argparse.ArgumentParser, default: str | None = "HFTokenizer"
) -> None:
    types = ", ".join(SUPPORTED_TOKENIZER_TYPES)
    sub.add_argument("--tokenizer-type", default=default, help=f"one of {types}")
    sub.add_argument(
        "--vocab-file", help="tokenizer.json, vocab.json, SentencePiece .model or .tiktoken file"
    )
    sub.add_argument("--merge-file", help="merges.txt (GPT2BPETokenizer, HFGPT2Tokenizer)")


def _add_inspect(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "inspect", parents=[common], help="counts, token statistics and first documents"
    )
    sub.add_argument("prefix", help="token file prefix (PREFIX.bin / PREFIX.idx)")
    sub.add_argument("--documents", type=int, default=3, help="documents to show (default 3)")
    _add_tokenizer_options(sub, default=None)
    sub.set_defaults(run=_run_inspect)


def _add_merge(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser("merge", parents=[common], help="concatenate token files into one")
    sub.add_argument(
        "--input", nargs="+", required=True, help="token file prefixes or directories of them"
    )
    sub.add_argument("--output-prefix", required=True, help="writes PREFIX.bin and PREFIX.idx")
    sub.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sub.set_defaults(run=_run_merge)


def _add_download(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "download", parents=[common], help="download a public corpus GPT-NeoX knows by name"
    )
    sub.add_argument("name", nargs="?", help=f"one of: {', '.join(sorted(PUBLIC_CORPORA))}")
    sub.add_argument("--data-dir", default="data", help="files go to DATA_DIR/NAME (default data)")
    sub.add_argument("--mirror", help="base URL that serves the same file names instead")
    sub.add_argument("--list", action="store_true", help="list the corpora and their URLs")
    sub.set_defaults(run=_run_download)


def _run_download(args: argparse.Namespace) -> None:
    if args.list or args.name is None:
        for corpus in PUBLIC_CORPORA.values():
            more = f" (+{len(corpus.urls) - 1} more)" if len(corpus.urls) > 1 else ""
            print(f"{corpus.name:18} {corpus.urls[0]}{more}")
        return
    paths = download_corpus(args.name, args.data_dir, mirror=args.mirror)
    directory = paths[0].parent
    print(f"downloaded {len(paths)} file(s) to {directory}")
    print(
        f"next: {PROG} preprocess --input {directory} --output-prefix {directory}/{args.name} ..."
    )


def _run_inspect(args: argparse.Namespace) -> None:
    tokenizer = None
    if args.tokenizer_type is not None or args.vocab_file is not None:
        tokenizer_type = args.tokenizer_type or "HFTokenizer"
        tokenizer = build_tokenizer(tokenizer_type, args.vocab_file, args.merge_file)
    print(describe(TokenFile(args.prefix), tokenizer, args.documents))


def _run_merge(args: argparse.Namespace) -> None:
    merged = merge_token_files(args.input, args.output_prefix, overwrite=args.overwrite)
    print(
        f"wrote {merged.bin_path} and {merged.idx_path}: {len(merged.doc_idx) - 1} documents, "
        f"{merged.num_tokens} tokens"
    )


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
        skip_bad_lines=args.skip_bad_lines,
        ftfy=args.ftfy,
        tokenizer_engine=args.tokenizer_engine,
        mask_before_token=args.mask_before_token,
    )
    for prefix in result.outputs.values():
        print(f"wrote {prefix}.bin and {prefix}.idx")
    print(result.summary())


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that temporary files are cleaned up on the way out."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status is one of the EXIT_* codes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{PROG}: terminated; no output written", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as err:
        if args.debug:
            raise
        return _report(err)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _report(err: Exception) -> int:
    if isinstance(err, _USER_ERRORS):
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{PROG}: failed: {type(err).__name__}: {err} (--debug shows where)", file=sys.stderr)
    return EXIT_FAILURE
