"""The run config: GPT-NeoX YAML files validated once into typed, frozen sections.

Every key has exactly one home (a field of one section below, or of `neox_model.ModelConfig`).
GPT-NeoX keys that only tune GPT-NeoX's own implementation are accepted and reported once
(`IGNORED_KEYS`); GPT-NeoX keys for features neox does not have yet are refused naming the
feature (`UNSUPPORTED_KEYS`; at GPT-NeoX's default, the feature off, they are accepted), and so
are values of neox's keys that ask for such a feature; older GPT-NeoX spellings are rewritten
into today's keys first (all these tables: `gpt_neox`); anything else unknown is an error naming
the closest valid key. Every problem of a config is reported at once, one line each. The
sections themselves are `sections`; the rules between them are `rules`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neox_model import ModelConfig
from neox_train.config.batch import (
    BatchLayout,
    data_parallel_size,
    resolve_batch,
    stated_data_parallel,
)
from neox_train.config.gpt_neox import (
    IGNORED_KEYS,
    LEGACY_KEYS,
    UNSUPPORTED_KEYS,
    refused_value,
    rewrite_legacy_keys,
    value_features,
)
from neox_train.config.rules import layout_problem
from neox_train.config.schema import ConfigError, Where, build, closest, field_names
from neox_train.config.sections import (
    CheckpointConfig,
    DataConfig,
    LaunchConfig,
    LoggingConfig,
    ObjectiveConfig,
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
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)

    def batch(self, world_size: int) -> BatchLayout:
        """The batch layout for `world_size` ranks (raises ConfigError when impossible, or
        when global_num_gpus states another world size)."""
        parallel, training = self.parallel, self.training
        stated = self.launch.global_num_gpus
        if stated is not None and stated != world_size:
            raise ConfigError(
                f"global_num_gpus is {stated} but this run has {world_size} ranks: start "
                f"{stated} (num_gpus x num_nodes, the hostfile, --world-size) or remove "
                "global_num_gpus (GPT-NeoX records the world size it ran at there)"
            )
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
    def smallest_world_size(self) -> int:
        """The fewest ranks this config trains on: one model's pipeline stages x tensor ranks,
        times the replicas the batch keys fix when all three are given."""
        parallel, training = self.parallel, self.training
        replicas = stated_data_parallel(
            training.train_batch_size,
            training.train_micro_batch_size_per_gpu,
            training.gradient_accumulation_steps,
        )
        return max(parallel.pipe_parallel_size, 1) * parallel.model_parallel_size * replicas

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
    ("objective", ObjectiveConfig),
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
    """Merge, validate and type the config files; a ConfigError names every problem found,
    one line each (unknown and refused keys, bad values of each section)."""
    merged = merge_files(paths)
    files = tuple(str(p) for p in paths)

    def where(key: str) -> str:
        return merged.origins.get(key.split(".")[0], ", ".join(files))

    values, rewritten = rewrite_legacy_keys(merged.values, where)
    sorted_keys = _sort_keys(values, where)
    problems = list(sorted_keys.problems)
    built: dict[str, Any] = {}
    for name, cls in config_sections():
        try:
            built[name] = build(cls, sorted_keys.split.get(cls, {}), where)
        except ConfigError as err:
            problems += [line for line in str(err).splitlines() if not sorted_keys.left_out(line)]
    if problems:
        raise ConfigError("\n".join(problems))
    if built["objective"].train_impl == "rm":  # a reward model: the score head
        built["model"] = dataclasses.replace(built["model"], value_head=True)
    run = RunConfig(**built)
    problem = layout_problem(run)
    if problem:
        raise ConfigError(f"{', '.join(files)}: {problem}")
    return LoadedConfig(run, files, merged.overrides, sorted_keys.ignored, tuple(rewritten))


@dataclass(frozen=True)
class _SortedKeys:
    split: dict[type, dict[str, Any]]  # section class -> its keys and values
    ignored: tuple[str, ...]  # "key: reason" lines
    problems: tuple[str, ...]  # one line per unknown or refused key
    refused: frozenset[str]  # neox's keys left out of `split`: their value was refused

    def left_out(self, problem: str) -> bool:
        """Whether `problem` is a refused key reported missing (said once, as refused)."""
        return any(problem.endswith(f"required key {key!r} is missing") for key in self.refused)


def _sort_keys(values: Mapping[str, Any], where: Where) -> _SortedKeys:
    """Each key to its section, to the ignored lines, or to the problems."""
    owners = all_keys()
    ignored: list[str] = []
    problems: list[str] = []
    refused: set[str] = set()
    split: dict[type, dict[str, Any]] = {}
    for key, value in values.items():
        if key in IGNORED_KEYS:
            ignored.append(f"{key}: {IGNORED_KEYS[key]}")
        elif key in UNSUPPORTED_KEYS:
            feature = refused_value(key, value)
            if feature is None:
                ignored.append(f"{key}: at GPT-NeoX's default, {UNSUPPORTED_KEYS[key]} off")
            else:
                problems.append(_refusal(where(key), key, feature))
        elif key in owners:
            features = value_features(key, value)
            problems += [
                f"{where(key)}: {key} asks for {feature}, which neox does not support yet"
                for feature in features
            ]
            if features:
                refused.add(key)
            else:
                split.setdefault(owners[key], {})[key] = value
        else:
            problems.append(f"{where(key)}: unknown key {key!r}{_suggestion(key, owners)}")
    problems += _extra_args_problems(values.get("deepspeed_extra_args"), owners, where)
    return _SortedKeys(split, tuple(ignored), tuple(problems), frozenset(refused))


def _refusal(where: str, key: str, feature: str) -> str:
    return (
        f"{where}: {key} is a GPT-NeoX key for {feature}, which neox does not support yet; "
        "remove it"
    )


def _extra_args_problems(extra: Any, owners: Mapping[str, type], where: Where) -> list[str]:
    """deepspeed_extra_args entries that are keys of this config: they belong at the top."""
    if not isinstance(extra, Mapping):
        return []
    return [
        f"{where('deepspeed_extra_args')}: deepspeed_extra_args.{key} is a key of the run "
        f"config, which writes it into the DeepSpeed config itself: set {key} at the top level"
        for key in extra
        if key in owners
    ]


def _suggestion(key: str, owners: Mapping[str, type]) -> str:
    """A close valid key, for a key GPT-NeoX does not define either."""
    hint = closest(key, [*owners, *IGNORED_KEYS, *LEGACY_KEYS])
    return f"; did you mean {hint!r}?" if hint else ""


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that YAML writes plain sequences."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
