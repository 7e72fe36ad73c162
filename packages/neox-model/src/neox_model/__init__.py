"""neox-model: GPT-NeoX-family transformer layers."""

from neox_model.config import InitMethod, ModelConfig, PosEmb
from neox_model.transformer import Block, Transformer
from neox_model.weights import (
    LATEST,
    ModelManifest,
    find_step_dir,
    load_model,
    load_state_dict,
    read_manifest,
    write_manifest,
)

__all__ = [
    "LATEST",
    "Block",
    "InitMethod",
    "ModelConfig",
    "ModelManifest",
    "PosEmb",
    "Transformer",
    "find_step_dir",
    "load_model",
    "load_state_dict",
    "read_manifest",
    "write_manifest",
]
__version__ = "0.1.0"
