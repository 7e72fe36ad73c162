"""Every use of DeepSpeed's internals, in one place, tied to the DeepSpeed versions it was tested
with.

neox reads and writes DeepSpeed's checkpoints itself (relayout, the ZeRO-3 consolidated weights,
optimizer-state norms), which reaches past DeepSpeed's public API: private methods of the engine
(`_get_ckpt_name`, `_get_zero_ckpt_name`, `_zero3_consolidated_16bit_state_dict`), attributes of
its optimizer wrappers (the flat fp32 partitions of ZeRO 1/2 and of the bf16 optimizer, each
parameter's `_hp_mapping`), and the lazy link between them. These change between DeepSpeed
releases without notice, so `pyproject.toml` pins `deepspeed` to `TESTED_RANGE` and
`check_version` refuses any other release when a run starts, naming both.

DeepSpeed builds some of its C++ ops when first used (torch's JIT extension build, minutes, into
the torch extensions cache, under a lock file that a build killed midway leaves behind, making
every later build wait on it forever). On CPU its process-group backend builds a shared-memory
all-reduce for `inference_all_reduce`, which neox never calls: `without_shm_comm_op` makes it
take its fallback instead. The one op neox does build is cpu_adam (`optimizer.type: cpu_adam`):
`check_op_build` refuses a left-behind lock in one line naming the file to delete, and says
when a build starts.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from neox_train.config.schema import ConfigError

log = logging.getLogger(__name__)

# the DeepSpeed releases this module was tested with: >= TESTED[0], < TESTED[1]
TESTED = ((0, 19), (0, 20))
TESTED_RANGE = f">={TESTED[0][0]}.{TESTED[0][1]},<{TESTED[1][0]}.{TESTED[1][1]}"


def check_version(installed: str | None = None) -> None:
    """Refuse a DeepSpeed outside the tested range (one line: installed, tested, the fix)."""
    fix = f'pip install --no-build-isolation "deepspeed{TESTED_RANGE}"'
    if installed is None:
        try:
            installed = metadata.version("deepspeed")
        except metadata.PackageNotFoundError:
            raise ConfigError(f"DeepSpeed is not installed: {fix}") from None
    release = re.match(r"(\d+)\.(\d+)", installed)
    numbers = (int(release[1]), int(release[2])) if release else None
    if numbers is None or not TESTED[0] <= numbers < TESTED[1]:
        raise ConfigError(
            f"DeepSpeed {installed} is installed; neox is tested with deepspeed{TESTED_RANGE} "
            f"(it uses DeepSpeed internals that change between releases): {fix}"
        )


# -- file names DeepSpeed gives a rank's share of a step -------------------------------------


def model_file(engine: Any, step_dir: Path) -> str:
    """The name of this rank's mp_rank_XX_model_states.pt (or its pipeline equivalent)."""
    return Path(engine._get_ckpt_name(str(step_dir.parent), step_dir.name)).name


def zero_file(engine: Any, step_dir: Path) -> str:
    """The name of this rank's flat optimizer partition file (ZeRO 1/2, bf16 optimizer)."""
    return Path(engine._get_zero_ckpt_name(str(step_dir.parent), step_dir.name)).name


def zero3_whole_weights(engine: Any) -> dict[str, torch.Tensor] | None:
    """The whole model's 16-bit weights gathered from every ZeRO-3 partition (collective: every
    rank calls it); rank 0 gets them, the other ranks None."""
    weights = engine._zero3_consolidated_16bit_state_dict()
    return None if weights is None else dict(weights)


# -- the optimizer wrappers ------------------------------------------------------------------


def optimizer_kind(engine: Any) -> str:
    """ "torch": the optimizer keeps per-parameter state itself (no ZeRO, fp32); "flat": ZeRO 1/2
    or DeepSpeed's bf16 optimizer, state in flat fp32 partitions; else the wrapper's class, or
    bitsandbytes' optimizer's (its 8-bit state is blocks of codes and scales, not per-parameter
    tensors that relayout could split or the state norms sum)."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # neox's GradientGuard, DeepSpeed's wrappers
    if type(inner).__module__.startswith("bitsandbytes"):
        return type(inner).__name__
    if hasattr(opt, "single_partition_of_fp32_groups") or hasattr(
        opt, "fp32_groups_flat_partition"
    ):
        return "flat"
    params = {id(p) for p in engine.module.parameters()}
    if isinstance(opt, torch.optim.Optimizer) and all(
        id(p) in params for g in opt.param_groups for p in g["params"]
    ):
        return "torch"
    return type(opt).__name__


def flat_partitions(engine: Any) -> list[torch.Tensor]:
    """This rank's flat fp32 partition of each parameter group (ZeRO 1/2 or bf16 optimizer)."""
    opt = engine.optimizer
    parts = getattr(opt, "single_partition_of_fp32_groups", None)
    return list(parts if parts is not None else opt.fp32_groups_flat_partition)


def flat_groups(engine: Any) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """(the model's parameters, this rank's flat fp32 partition) of each parameter group of a
    ZeRO 1/2 or bf16 optimizer."""
    opt = engine.optimizer
    params = getattr(opt, "bit16_groups", None)
    params = params if params is not None else opt.bf16_groups
    return list(zip(params, flat_partitions(engine), strict=True))


def fragment(param: torch.Tensor) -> tuple[int, int] | None:
    """(start, length) of `param`'s slice in this rank's flat partition; None when this rank
    holds none of it (or the optimizer keeps no flat partitions)."""
    mapping = getattr(param, "_hp_mapping", None)
    if mapping is None:
        return None
    address = mapping.hp_fragment_address
    return int(address.start), int(address.numel)


def relink_flat_state(engine: Any) -> None:
    """After the flat partitions' optimizer state was replaced: link each parameter to its
    slices again, so that DeepSpeed's per-parameter setters reach the new state."""
    wrapper = engine.optimizer
    wrapper._hp_optimizer_states_linked = False
    wrapper._lazy_init_hp_params_optimizer_state()


# -- ops DeepSpeed builds when first used ----------------------------------------------------


def without_shm_comm_op() -> None:
    """Keep DeepSpeed's CPU backend from building its shared-memory all-reduce op when it joins
    the process group (about 3 minutes on a first run): only `inference_all_reduce` uses it, and
    without it that falls back to torch.distributed, as on a machine where it cannot build."""
    # by its module name: `deepspeed.comm.torch` as an attribute is the torch package itself
    backend = importlib.import_module("deepspeed.comm.torch")
    setattr(backend, "build_shm_op", lambda: None)  # noqa: B010


def op_build_directory(name: str) -> Path:
    """Where torch's JIT extension build puts DeepSpeed's op `name` (as torch computes it)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root) / name
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accelerator = f"rocm{torch.version.hip.replace('.', '')}"
    elif torch.version.cuda is not None:
        accelerator = f"cu{torch.version.cuda.replace('.', '')}"
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{accelerator}" / name


def check_op_build(name: str) -> None:
    """Before any rank of the run builds DeepSpeed's op `name` (call it on every rank, then a
    barrier, then build): refuse a lock left by an earlier build, and say when a build starts."""
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get(name, False):
        return  # built when DeepSpeed was installed
    directory = op_build_directory(name)
    lock = directory / "lock"
    if lock.exists():
        raise ConfigError(
            f"a build of DeepSpeed's {name} op did not finish: {lock} is left from it, and "
            f"every build would wait on it forever; unless another run is building the op right "
            f"now, delete it (rm {lock}) and start again"
        )
    if not (directory / f"{name}.so").exists():
        log.info("building DeepSpeed's %s op into %s (once; a few minutes)", name, directory)
