"""Every use of DeepSpeed's internals, in one place, tied to the DeepSpeed versions it was tested
with.

neox reads and writes DeepSpeed's checkpoints itself (relayout, the ZeRO-3 consolidated weights,
optimizer-state norms), which reaches past DeepSpeed's public API: private methods of the engine
(`_get_ckpt_name`, `_get_zero_ckpt_name`, `_zero3_consolidated_16bit_state_dict`), attributes of
its optimizer wrappers (the flat fp32 partitions of ZeRO 1/2 and of the bf16 optimizer, each
parameter's `_hp_mapping`), and the lazy link between them. These change between DeepSpeed
releases without notice, so `pyproject.toml` pins `deepspeed` to `TESTED_RANGE` and
`check_version` refuses any other release when a run starts, naming both.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from neox_train.config.schema import ConfigError

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


def zero3_whole_weights(engine: Any) -> dict[str, torch.Tensor]:
    """The whole model's 16-bit weights gathered from every ZeRO-3 partition (collective)."""
    return dict(engine._zero3_consolidated_16bit_state_dict())


# -- the optimizer wrappers ------------------------------------------------------------------


def optimizer_kind(engine: Any) -> str:
    """ "torch": the optimizer keeps per-parameter state itself (no ZeRO, fp32); "flat": ZeRO 1/2
    or DeepSpeed's bf16 optimizer, state in flat fp32 partitions; else the wrapper's class."""
    opt = engine.optimizer
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
