"""neox-model: GPT-NeoX-family transformer layers, tensor-parallel layers and a KV cache."""

from neox_model.config import (
    GATED_ACTIVATIONS,
    Activation,
    AttentionType,
    InitMethod,
    ModelConfig,
    Norm,
    PosEmb,
)
from neox_model.kv_cache import KVCache
from neox_model.norms import NORM_TYPES
from neox_model.parameters import count_parameters
from neox_model.pipeline import layer_name_map, pipeline_loss, pipeline_specs
from neox_model.process_group import (
    LaunchEnv,
    exit_process,
    join_process_group,
    leave_process_group,
)
from neox_model.state_layout import (
    LAYOUT_FILE,
    READABLE_OPTIMIZERS,
    EngineLayout,
    RankFiles,
    SavedLayout,
    read_layout,
    write_layout,
)
from neox_model.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TPGroup,
    VocabParallelEmbedding,
    shard,
    shard_spec,
    unshard,
    vocab_parallel_cross_entropy,
)
from neox_model.transformer import Block, Transformer
from neox_model.weights import (
    LATEST,
    LAYER_FILE,
    MANIFEST,
    MODEL_FILE,
    ModelManifest,
    WeightFile,
    find_step_dir,
    layer_file_name,
    load_model,
    load_state_dict,
    model_file_name,
    read_manifest,
    tensor_parallel_specs,
    write_manifest,
)

__all__ = [
    "GATED_ACTIVATIONS",
    "LATEST",
    "LAYER_FILE",
    "LAYOUT_FILE",
    "MANIFEST",
    "MODEL_FILE",
    "NORM_TYPES",
    "READABLE_OPTIMIZERS",
    "Activation",
    "AttentionType",
    "Block",
    "ColumnParallelLinear",
    "EngineLayout",
    "InitMethod",
    "KVCache",
    "LaunchEnv",
    "ModelConfig",
    "ModelManifest",
    "Norm",
    "PosEmb",
    "RankFiles",
    "RowParallelLinear",
    "SavedLayout",
    "TPGroup",
    "Transformer",
    "VocabParallelEmbedding",
    "WeightFile",
    "count_parameters",
    "exit_process",
    "find_step_dir",
    "join_process_group",
    "layer_file_name",
    "layer_name_map",
    "leave_process_group",
    "load_model",
    "load_state_dict",
    "model_file_name",
    "pipeline_loss",
    "pipeline_specs",
    "read_layout",
    "read_manifest",
    "shard",
    "shard_spec",
    "tensor_parallel_specs",
    "unshard",
    "vocab_parallel_cross_entropy",
    "write_layout",
    "write_manifest",
]
__version__ = "0.1.0"
