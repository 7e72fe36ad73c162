"""The checkpoint format's one owner: names, write rules, manifests, integrity, safe reading.

- `format`: step and file names, `latest`, the atomic umask-honouring write, the errors;
- `manifest`: model.json (architecture, which file holds which weights);
- `layout`: layout.json (the parallel layout, each rank's state files);
- `integrity`: files.json (sizes and checksums, written last), completeness, resolving a path
  to a complete step, verification;
- `safe_load`: reading torch files with `weights_only=True` and a short allow-list.
"""

from neox_model.checkpoint.format import (
    CONSOLIDATED,
    FILES,
    LATEST,
    LAYER_FILE,
    LAYOUT_FILE,
    MANIFEST,
    MODEL_FILE,
    RUN_CONFIG,
    SAVING,
    STATE_FILE,
    CheckpointError,
    CorruptCheckpoint,
    DiskFull,
    NoCheckpoint,
    UnsafeCheckpoint,
    is_disk_full,
    layer_file_name,
    model_file_name,
    raise_if_disk_full,
    step_dirs,
    step_number,
    step_tag,
    write_atomic,
    write_latest,
)
from neox_model.checkpoint.integrity import (
    FileRecord,
    complete_steps,
    damaged,
    is_complete,
    record_files,
    resolve_step,
    seal_step,
    step_files,
    verify_step,
)
from neox_model.checkpoint.layout import (
    READABLE_OPTIMIZERS,
    EngineLayout,
    RankFiles,
    SavedLayout,
    read_layout,
    write_layout,
)
from neox_model.checkpoint.manifest import ModelManifest, WeightFile, read_manifest, write_manifest
from neox_model.checkpoint.safe_load import SAFE_GLOBALS, load_file

__all__ = [
    "CONSOLIDATED",
    "FILES",
    "LATEST",
    "LAYER_FILE",
    "LAYOUT_FILE",
    "MANIFEST",
    "MODEL_FILE",
    "READABLE_OPTIMIZERS",
    "RUN_CONFIG",
    "SAFE_GLOBALS",
    "SAVING",
    "STATE_FILE",
    "CheckpointError",
    "CorruptCheckpoint",
    "DiskFull",
    "EngineLayout",
    "FileRecord",
    "ModelManifest",
    "NoCheckpoint",
    "RankFiles",
    "SavedLayout",
    "UnsafeCheckpoint",
    "WeightFile",
    "complete_steps",
    "damaged",
    "is_complete",
    "is_disk_full",
    "layer_file_name",
    "load_file",
    "model_file_name",
    "raise_if_disk_full",
    "read_layout",
    "read_manifest",
    "record_files",
    "resolve_step",
    "seal_step",
    "step_dirs",
    "step_files",
    "step_number",
    "step_tag",
    "verify_step",
    "write_atomic",
    "write_latest",
    "write_layout",
    "write_manifest",
]
