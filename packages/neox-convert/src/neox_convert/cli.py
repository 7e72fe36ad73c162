"""`neox-convert`: convert neox checkpoints to and from other formats.

neox-convert to-hf --input_dir CKPT --output_dir OUT [--precision auto|fp32|fp16|bf16]
                   [--architecture neox] [--overwrite]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neox-convert", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="export to a Hugging Face model directory")
    to_hf.add_argument(
        "--input_dir",
        "--input-dir",
        required=True,
        help="checkpoint step directory, or the run directory (its latest step)",
    )
    to_hf.add_argument("--output_dir", "--output-dir", required=True)
    to_hf.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    to_hf.add_argument(
        "--architecture",
        choices=["neox"],
        default="neox",
        help="Hugging Face architecture (llama/mistral come later)",
    )
    to_hf.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[neox] %(message)s", stream=sys.stdout)
    from neox_convert.export import export_to_hf

    try:
        out = export_to_hf(
            args.input_dir, args.output_dir, precision=args.precision, overwrite=args.overwrite
        )
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"neox-convert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
