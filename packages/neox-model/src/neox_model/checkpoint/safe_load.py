"""Reading checkpoint files without running code from them.

`torch.load(weights_only=True)` unpickles tensors, containers and plain values only; anything
else must be allow-listed. The list below names the few other types neox's, DeepSpeed's and
GPT-NeoX's checkpoint files hold (a ZeRO stage enum, a loss scaler, a fragment address tuple,
numpy RNG state, an argparse namespace), by their import path, so that neox-model needs neither
DeepSpeed nor numpy to read files without them. A file asking for any other global (a planted
`os.system`, say) is refused with one line naming it, and nothing in it runs.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from neox_model.checkpoint.format import CorruptCheckpoint, UnsafeCheckpoint

SAFE_GLOBALS = frozenset(
    {
        "argparse.Namespace",
        "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.runtime.fp16.loss_scaler.LossScaler",
        "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
        "deepspeed.utils.tensor_fragment.fragment_address",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
    }
)
_NUMPY_DTYPE = re.compile(r"numpy\.dtypes\.\w+DType$")  # numpy >= 1.25 pickles dtype classes
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_WEIGHTS_ONLY = "Weights only load failed"
_MAX_RETRIES = 16


def load_file(path: str | Path) -> Any:
    """The object in a torch file, on the CPU, unpickled with `weights_only=True` and the
    allow-listed types; UnsafeCheckpoint for a file that asks for anything else."""
    path = Path(path)
    allowed: list[Any] = []
    for _ in range(_MAX_RETRIES):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if _WEIGHTS_ONLY not in str(err):
                raise CorruptCheckpoint(f"{path} cannot be read: {_one_line(err)}") from err
            allowed.append(_allowed_global(path, _refused_global(err)))
        except (RuntimeError, EOFError, ValueError) as err:  # a damaged zip or pickle stream
            raise CorruptCheckpoint(f"{path} cannot be read: {_one_line(err)}") from err
    raise CorruptCheckpoint(f"{path} asks for too many types to be a checkpoint file")


def _refused_global(err: pickle.UnpicklingError) -> str:
    match = _GLOBAL.search(str(err))
    return match[1] if match else "an object that is not plain data"


def _allowed_global(path: Path, name: str) -> Any:
    """The object `name` stands for, if it is allow-listed; else UnsafeCheckpoint."""
    if name not in SAFE_GLOBALS and not _NUMPY_DTYPE.match(name):
        raise UnsafeCheckpoint(
            f"{path} refused: unpickling it would call {name}, which a checkpoint never needs "
            "(a foreign or tampered file; nothing in it was run)"
        )
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise CorruptCheckpoint(
            f"{path} holds a {name}, which cannot be imported here ({err}): install the "
            "package that wrote it"
        ) from err


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
