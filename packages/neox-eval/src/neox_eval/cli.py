"""`neox-eval`: evaluate a neox model with EleutherAI's lm-evaluation-harness.

The adapter itself is not written yet: this entry point accepts GPT-NeoX's flags and says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neox-eval", description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+", help="run config files (with a load checkpoint)")
    parser.add_argument("--eval_tasks", nargs="+", required=True)
    parser.add_argument("--num_fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--output_path")
    parser.parse_args(argv)
    print(
        "neox-eval: error: the lm-eval adapter is not available in this release yet",
        file=sys.stderr,
    )
    return 2
