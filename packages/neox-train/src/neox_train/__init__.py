"""neox-train: the DeepSpeed training loop, run config and checkpoints."""

from neox_train.batch import BatchLayout, data_parallel_size, resolve_batch
from neox_train.run_config import (
    IGNORED_KEYS,
    UNSUPPORTED_KEYS,
    LoadedConfig,
    RunConfig,
    all_keys,
    load_run_config,
)
from neox_train.schema import ConfigError

__all__ = [
    "IGNORED_KEYS",
    "UNSUPPORTED_KEYS",
    "BatchLayout",
    "ConfigError",
    "LoadedConfig",
    "RunConfig",
    "all_keys",
    "data_parallel_size",
    "load_run_config",
    "resolve_batch",
]
__version__ = "0.1.0"
