"""Where a checkpoint keeps the training state: `layout.json` beside DeepSpeed's files.

`model.json` says where the weights are; `layout.json` says how the run that saved the step was
laid out and where each rank's optimizer state went: the tensor, pipeline and data sizes, ZeRO
stage and precision, and per rank DeepSpeed's model-states file of its model-parallel slice,
its ZeRO partition file (if any) and what its parameters are called locally and in the whole
`Transformer`. neox-train writes it at every save and reads it to resume at another layout;
neox-convert's reshard carries it, with the files it names, into the resharded checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_model.checkpoint.format import LAYOUT_FILE, CorruptCheckpoint, write_atomic

LAYOUT_FORMAT_VERSION = 1
# optimizer kinds whose state neox reads: "torch" keeps per-parameter state (no ZeRO, fp32),
# "flat" keeps flat fp32 partitions with param_slice_mappings (ZeRO 1/2, bf16 optimizer)
READABLE_OPTIMIZERS = ("torch", "flat")


@dataclass(frozen=True)
class EngineLayout:
    """What decides whether DeepSpeed can read a checkpoint back as it is."""

    tensor: int
    pipe: int
    data: int
    zero_stage: int
    precision: str
    expert: int = 1  # expert-parallel ranks out of `data` (RankFiles.tp is then their rank)

    def describe(self) -> str:
        experts = f" (expert-parallel {self.expert})" if self.expert > 1 else ""
        return (
            f"tensor {self.tensor} x pipeline {self.pipe} x data {self.data}{experts}, "
            f"ZeRO stage {self.zero_stage}, {self.precision}"
        )

    @property
    def slices(self) -> int:
        """Model-parallel slices: ranks of one replica holding different parameters."""
        return self.tensor * self.expert


@dataclass(frozen=True)
class RankFiles:
    """One rank's share of a saved step (paths relative to the step directory)."""

    tp: int  # the model-parallel slice: tensor-parallel rank, or expert-parallel rank
    pp: int
    dp: int
    model_file: str  # DeepSpeed's mp_rank_XX_model_states.pt of its model-parallel slice
    optim_file: str | None  # its flat partitions (ZeRO 1/2, bf16 optimizer)
    names: dict[str, str]  # local parameter name -> name in the whole Transformer
    groups: tuple[tuple[str, ...], ...] = ()  # torch optimizer: local names by group, in order

    def files(self) -> set[str]:
        return {self.model_file, *([self.optim_file] if self.optim_file else [])}

    def moved(self, folder: str) -> RankFiles:
        """The same files under `folder` of the step directory."""
        optim = f"{folder}/{self.optim_file}" if self.optim_file else None
        return dataclasses.replace(self, model_file=f"{folder}/{self.model_file}", optim_file=optim)


@dataclass(frozen=True)
class SavedLayout:
    layout: EngineLayout
    optimizer: str  # "torch", "flat", or the class DeepSpeed wrapped the optimizer in
    ranks: tuple[RankFiles, ...]
    # the weights were rewritten at another layout (neox-convert reshard): DeepSpeed cannot
    # read the step back; the optimizer state is in the files named, as saved
    resharded: bool = False

    @property
    def readable_optimizer(self) -> bool:
        return self.optimizer in READABLE_OPTIMIZERS and self.layout.zero_stage != 3


def write_layout(step_dir: str | Path, saved: SavedLayout) -> Path:
    """Write layout.json (whole or not at all)."""
    body = {
        "format_version": LAYOUT_FORMAT_VERSION,
        "layout": dataclasses.asdict(saved.layout),
        "optimizer": saved.optimizer,
        "resharded": saved.resharded,
        "ranks": [dataclasses.asdict(r) for r in saved.ranks],
    }
    return write_atomic(Path(step_dir) / LAYOUT_FILE, json.dumps(body, indent=1) + "\n")


def read_layout(step_dir: str | Path) -> SavedLayout | None:
    """A step's layout.json; None for a step without one (written by an older neox, or an
    import by neox-convert, which holds weights only)."""
    path = Path(step_dir) / LAYOUT_FILE
    if not path.is_file():
        return None
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptCheckpoint(f"{path} is damaged: {err}") from err
    if body.get("format_version") != LAYOUT_FORMAT_VERSION:
        raise CorruptCheckpoint(f"{path}: unsupported format_version {body.get('format_version')}")
    ranks = tuple(
        RankFiles(**{**r, "groups": tuple(tuple(g) for g in r.get("groups", ()))})
        for r in body["ranks"]
    )
    return SavedLayout(
        EngineLayout(**body["layout"]), body["optimizer"], ranks, body.get("resharded", False)
    )
