"""neox-train: the DeepSpeed training loop, run config and checkpoints."""

from neox_train.config.batch import BatchLayout, data_parallel_size, resolve_batch
from neox_train.config.gpt_neox import IGNORED_KEYS, UNSUPPORTED_KEYS
from neox_train.config.inputs import check_inputs
from neox_train.config.run_config import LoadedConfig, RunConfig, all_keys, load_run_config
from neox_train.config.schema import ConfigError, UserError
from neox_train.config.sections import LaunchConfig

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
