"""Reading `metrics.jsonl` (written by `monitor.JsonlWriter`, rank 0 only): one JSON object per
line, {"step", "train_loss", "lr", "grad_norm", "tokens_per_s", ...} after every step and
{"step", "valid_loss", "valid_ppl"} / {"step", "test_loss", "test_ppl"} after evaluations; a
resumed run appends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
