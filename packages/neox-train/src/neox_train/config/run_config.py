"""The run config: GPT-NeoX YAML files validated once into typed, frozen sections.

Every key has exactly one home (a field of one section below, or of `neox_model.ModelConfig`).
GPT-NeoX keys that only tune GPT-NeoX's own implementation are accepted and reported once
(`IGNORED_KEYS`); GPT-NeoX keys for features neox does not have yet are refused with the reason
(`UNSUPPORTED_KEYS`); older GPT-NeoX spellings are rewritten into today's keys first (all three
tables: `gpt_neox`); anything else unknown is an error naming the closest valid key. The sections
themselves are `sections`; the rules between them are `rules`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_model import ModelConfig
from neox_train.config.batch import BatchLayout, data_parallel_size, resolve_batch
from neox_train.config.gpt_neox import (
    IGNORED_KEYS,
    LEGACY_KEYS,
    UNSUPPORTED_KEYS,
    rewrite_legacy_keys,
)
from neox_train.config.rules import layout_problem
from neox_train.config.schema import ConfigError, build, closest, field_names
from neox_train.config.sections import (
    CheckpointConfig,
    DataConfig,
    LaunchConfig,
    LoggingConfig,
    OptimizerConfig,
    ParallelConfig,
    PrecisionConfig,
    TextGenConfig,
    TrainingConfig,
)
from neox_train.config.yaml_files import Override, merge_files

_MODEL_KEYS = tuple(name for name in field_names(ModelConfig) if name != "vocab_size")


@dataclass(frozen=True)
class RunConfig:
    """A validated run: every section typed and frozen."""

    model: ModelConfig  # vocab_size is None until the tokenizer is known
    data: DataConfig
    optimizer: OptimizerConfig
    training: TrainingConfig
    precision: PrecisionConfig
    parallel: ParallelConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    launch: LaunchConfig
    text_generation: TextGenConfig

    def batch(self, world_size: int) -> BatchLayout:
        """The batch layout for `world_size` ranks (raises ConfigError when impossible)."""
        parallel, training = self.parallel, self.training
        dp = data_parallel_size(
            world_size, parallel.pipe_parallel_size, parallel.model_parallel_size
        )
        return resolve_batch(
            dp,
            training.train_batch_size,
            training.train_micro_batch_size_per_gpu,
            training.gradient_accumulation_steps,
        )

    @property
    def lr_decay_iters(self) -> int:
        return self.optimizer.lr_decay_iters or self.training.train_iters

    @property
    def warmup_iters(self) -> int:
        warmup = self.optimizer.warmup
        return int(warmup) if warmup > 1 else int(warmup * self.lr_decay_iters)

    def to_yaml_dict(self) -> dict[str, Any]:
        """Every key with its value, flat as in a GPT-NeoX YAML; loads back to this config."""
        flat: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            values.pop("vocab_size", None)
            flat.update(values)
        return _plain(flat)


_SECTIONS: tuple[tuple[str, type], ...] = (
    ("data", DataConfig),
    ("optimizer", OptimizerConfig),
    ("training", TrainingConfig),
    ("precision", PrecisionConfig),
    ("parallel", ParallelConfig),
    ("checkpoint", CheckpointConfig),
    ("logging", LoggingConfig),
    ("launch", LaunchConfig),
    ("text_generation", TextGenConfig),
)


@dataclass(frozen=True)
class LoadedConfig:
    run: RunConfig
    files: tuple[str, ...]
    overrides: tuple[Override, ...]  # values replaced by a later file
    ignored: tuple[str, ...]  # "key: reason" lines for accepted-but-ignored GPT-NeoX keys
    rewritten: tuple[str, ...] = ()  # "key: read as ..." lines for older GPT-NeoX spellings


def config_sections() -> tuple[tuple[str, type], ...]:
    """(name, class) of every section a run config's keys belong to, the model first."""
    return (("model", ModelConfig), *_SECTIONS)


def model_keys() -> tuple[str, ...]:
    """The ModelConfig fields a config file sets (vocab_size comes from the tokenizer)."""
    return _MODEL_KEYS


def all_keys() -> dict[str, type]:
    """Every accepted top-level key and the section class that owns it."""
    owners: dict[str, type] = dict.fromkeys(_MODEL_KEYS, ModelConfig)
    for _, cls in _SECTIONS:
        for name in field_names(cls):
            assert name not in owners, f"config key {name} has two homes"
            owners[name] = cls
    return owners


def load_run_config(paths: Sequence[str | Path]) -> LoadedConfig:
    """Merge, validate and type the config files (raises ConfigError on any problem)."""
    merged = merge_files(paths)
    files = tuple(str(p) for p in paths)

    def where(key: str) -> str:
        return merged.origins.get(key.split(".")[0], ", ".join(files))

    owners = all_keys()
    ignored = []
    split: dict[type, dict[str, Any]] = {}
    values, rewritten = rewrite_legacy_keys(merged.values, where)
    for key, value in values.items():
        if key in IGNORED_KEYS:
            ignored.append(f"{key}: {IGNORED_KEYS[key]}")
        elif key in UNSUPPORTED_KEYS:
            raise ConfigError(
                f"{where(key)}: {key} is a GPT-NeoX key for {UNSUPPORTED_KEYS[key]}, which neox "
                "does not support yet; remove it"
            )
        elif key in owners:
            split.setdefault(owners[key], {})[key] = value
        else:
            raise ConfigError(f"{where(key)}: unknown key {key!r}{_suggestion(key, owners)}")
    sections: dict[str, Any] = {
        name: build(cls, split.get(cls, {}), where) for name, cls in _SECTIONS
    }
    model = build(ModelConfig, split.get(ModelConfig, {}), where)
    run = RunConfig(model=model, **sections)
    problem = layout_problem(run)
    if problem:
        raise ConfigError(f"{', '.join(files)}: {problem}")
    return LoadedConfig(run, files, merged.overrides, tuple(ignored), tuple(rewritten))


def _suggestion(key: str, owners: Mapping[str, type]) -> str:
    hint = closest(key, [*owners, *IGNORED_KEYS, *LEGACY_KEYS])
    return f"; did you mean {hint!r}?" if hint else ""


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that YAML writes plain sequences."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
