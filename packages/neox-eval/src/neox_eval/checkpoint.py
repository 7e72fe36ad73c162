"""The checkpoint to evaluate: its model and tokenizer, and the run settings evaluation reads.

A step is read through the checkpoint format's owner, neox-model: `model.json` gives the model
(whatever layout the weights were saved in: tensor-parallel shards, pipeline layer files) and
the tokenizer saved beside it (its `tokenizer_type`, vocabulary and merges files). A step saved
before model.json recorded the tokenizer type is read as before: its `config.yml` (the run config,
flat GPT-NeoX-style YAML), with the given config values merged over it, gives `tokenizer_type` and
`merge_file`.

Config files given on the command line are merged left to right (later files win, nested
mappings merged, `-` and `_` in keys equivalent); the command reads `load` from them, and
evaluation `seq_length` (default: the model's) and `train_micro_batch_size_per_gpu`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_data import Tokenizer, build_tokenizer
from neox_model import ModelManifest, TPGroup, Transformer, load_model, verified_step
from neox_model.checkpoint import RUN_CONFIG
from neox_model.config_files import merge_files

DEFAULT_TOKENIZER_TYPE = "GPT2BPETokenizer"  # GPT-NeoX's default, for a config.yml without one


@dataclass(frozen=True)
class LoadedCheckpoint:
    step_dir: Path
    model: Transformer  # on the CPU, in eval mode; this rank's shard under tensor parallelism
    tokenizer: Tokenizer
    seq_length: int
    micro_batch_size: int | None  # train_micro_batch_size_per_gpu, if the config sets it


def read_config(paths: Sequence[str | Path]) -> dict[str, Any]:
    """YAML config files merged left to right (later keys win, nested mappings merged), read as
    neox-train reads them (`neox_model.config_files`; its errors are ValueErrors)."""
    return merge_files(paths).values if paths else {}


def load_checkpoint(
    path: str | Path, *, tp: TPGroup | None = None, overrides: Mapping[str, Any] | None = None
) -> LoadedCheckpoint:
    """The checkpoint at `path` (a step directory, or a run directory whose `latest` step is
    used), as one tensor-parallel rank's shard with `tp`; `overrides` are the given config
    values (`seq_length`, `train_micro_batch_size_per_gpu`)."""
    step_dir, manifest = verified_step(path)
    if manifest.config.value_head:  # said before any weight is read
        raise ValueError(
            f"{step_dir} is a reward model (a score per position, no next-token "
            "distribution): lm-eval's tasks need a language model"
        )
    given = dict(overrides or {})
    _, manifest, model = load_model(step_dir, tp=tp, verified=True)
    micro_batch = given.get("train_micro_batch_size_per_gpu")
    return LoadedCheckpoint(
        step_dir=step_dir,
        model=model,
        tokenizer=_tokenizer(step_dir, manifest, given),
        seq_length=int(given.get("seq_length") or model.config.seq_length),
        micro_batch_size=int(micro_batch) if micro_batch else None,
    )


def _tokenizer(step_dir: Path, manifest: ModelManifest, given: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer saved in the step, as the manifest records it (for an older step, whose
    manifest names the vocabulary file only: as its config.yml and the given values say)."""
    vocab = step_dir / manifest.tokenizer if manifest.tokenizer else None
    tokenizer_type, merge_file = manifest.tokenizer_type, manifest.merge_file
    if tokenizer_type is None:
        saved = step_dir / RUN_CONFIG
        config = {**(read_config([saved]) if saved.is_file() else {}), **given}
        tokenizer_type = config.get("tokenizer_type") or DEFAULT_TOKENIZER_TYPE
        merge_file = Path(config["merge_file"]).name if config.get("merge_file") else None
    merges = step_dir / merge_file if merge_file else None
    return build_tokenizer(tokenizer_type, vocab, merges)
