"""neox-train: the DeepSpeed training loop, run config and checkpoints."""

from neox_train.batch import BatchLayout, data_parallel_size, resolve_batch
from neox_train.inputs import check_inputs
from neox_train.run_config import (
    IGNORED_KEYS,
    UNSUPPORTED_KEYS,
    LaunchConfig,
    LoadedConfig,
    RunConfig,
    all_keys,
    load_run_config,
)
from neox_train.schema import ConfigError, UserError

__all__ = [
    "IGNORED_KEYS",
    "UNSUPPORTED_KEYS",
    "BatchLayout",
    "ConfigError",
    "LaunchConfig",
    "LoadedConfig",
    "RunConfig",
    "UserError",
    "all_keys",
    "check_inputs",
    "data_parallel_size",
    "load_run_config",
    "resolve_batch",
]
__version__ = "0.1.0"
