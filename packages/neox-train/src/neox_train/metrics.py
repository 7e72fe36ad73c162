"""`metrics.jsonl`: one JSON line per logged event, beside the run's checkpoints.

Written by rank 0 only. Records are {"step", "train_loss", "lr", "tokens_per_s"} after every
step and {"step", "valid_loss"} / {"step", "test_loss"} after evaluations; a resumed run appends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
