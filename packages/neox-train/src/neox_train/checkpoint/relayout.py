"""Resuming at another layout: a checkpoint saved at one (tensor, pipeline, data) layout, ZeRO
stage or precision, continued by a run with another, model and optimizer state included.

DeepSpeed reads back only the layout it saved. So at every save neox writes `layout.json` beside
DeepSpeed's files: the layout, and for every rank which of DeepSpeed's files hold its state and
what its parameters are called, locally and in the whole model. A run whose layout differs
reads the step through it, joins every tensor into its whole-model form and cuts this rank's
share out again:

- weights: `model.json`, as every reader of a checkpoint does (`neox_model.load_state_dict`);
- optimizer state without ZeRO: the torch optimizer's state dict in the model-parallel slice's
  mp_rank_XX_model_states.pt, whose entries are numbered in parameter-group order;
- with ZeRO 1/2 or DeepSpeed's bf16 optimizer: every data-parallel rank's flat partition of each
  parameter group (fp32 master weights and optimizer state) and the slice of it that belongs to
  each parameter (`param_slice_mappings`); a parameter's slices, in data-parallel order, are
  the parameter.

The tensor-parallel shards of a tensor join and split along the same dimension as the weight's
(`neox_model.shard_spec`). The schedule, the step count and the data position do not depend on
the layout and carry over as saved; dropout draws depend on the data-parallel rank and so repeat
only when the number of replicas is unchanged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neox_model import (
    READABLE_OPTIMIZERS,
    EngineLayout,
    RankFiles,
    SavedLayout,
    TPGroup,
    load_state_dict,
    read_manifest,
    shard,
    shard_spec,
    tensor_parallel_specs,
    unshard,
)
from neox_model.checkpoint import load_file
from neox_model.moe import Experts
from neox_train.config.schema import ConfigError
from neox_train.engine.deepspeed_internals import (
    flat_partitions,
    model_file,
    optimizer_kind,
    relink_flat_state,
    zero_file,
)

log = logging.getLogger(__name__)

MASTER = "fp32"  # the fp32 master weights, beside the optimizer's own state keys
_TIED = "tied_modules"  # where DeepSpeed's PipelineModule registers the layers of a tie


# -- what this rank's engine looks like ------------------------------------------------------


def whole_model_names(module: nn.Module) -> dict[str, str]:
    """Local parameter name -> the Transformer's name of it (a pipeline stage's layers are
    registered by their index, a tied layer under `tied_modules.KEY`, and each layer maps its
    names with `model_name`). A tied output's copy of the embedding has the embedding's name."""
    names = {}
    for name, _ in module.named_parameters():
        head, _, rest = name.partition(".")
        layer = module._modules.get(head)
        if head == _TIED and layer is not None:
            key, _, rest = rest.partition(".")
            layer = layer._modules.get(key)
        model_name = getattr(layer, "model_name", None)
        names[name] = model_name(rest) if model_name is not None and rest else name
    return names


def describe_rank(engine: Any, parallel: Any, step_dir: Path) -> tuple[RankFiles, str]:
    """This rank's entry of layout.json and its optimizer kind (every rank, at save)."""
    kind = optimizer_kind(engine)
    local = {id(p): n for n, p in engine.module.named_parameters()}
    groups = (
        tuple(tuple(local[id(p)] for p in g["params"]) for g in engine.optimizer.param_groups)
        if kind == "torch"
        else ()
    )
    optim_file = None
    if kind == "flat":
        optim_file = zero_file(engine, step_dir)
    entry = RankFiles(
        tp=parallel.slice.rank,
        pp=parallel.pipe_stage,
        dp=parallel.data_rank,
        model_file=model_file(engine, step_dir),
        optim_file=optim_file,
        names=whole_model_names(engine.module),
        groups=groups,
    )
    return entry, kind


def saved_layout(layout: EngineLayout, described: list[tuple[RankFiles, str]]) -> SavedLayout:
    """The step's layout.json, from every rank's `describe_rank`."""
    kinds = {kind for _, kind in described}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    return SavedLayout(layout, kind, tuple(entry for entry, _ in described))


# -- the saved step as whole-model tensors ---------------------------------------------------


def _load(path: Path) -> Any:
    return load_file(path)


def _torch_states(step_dir: Path, entry: RankFiles) -> Iterator[tuple[str, dict[str, Any]]]:
    """(whole-model name, state) of a torch optimizer's state dict, saved without ZeRO."""
    saved = _load(step_dir / entry.model_file)["optimizer"]
    if saved is None or "state" not in saved:
        raise ConfigError(f"{step_dir / entry.model_file} holds no optimizer state")
    order = [name for group in entry.groups for name in group]
    for index, local in enumerate(order):
        state = saved["state"].get(index)
        if state:
            yield entry.names[local], state


def _flat_states(
    step_dir: Path, entries: list[RankFiles], shapes: dict[str, torch.Size]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(whole-model name, state with the fp32 master) of every parameter of one model-parallel
    slice, from its data-parallel ranks' flat partitions in rank order."""
    pieces: dict[str, dict[str, list[torch.Tensor]]] = defaultdict(lambda: defaultdict(list))
    scalars: dict[str, Any] = {}
    for entry in sorted(entries, key=lambda e: e.dp):
        assert entry.optim_file is not None
        saved = _load(step_dir / entry.optim_file)["optimizer_state_dict"]
        base = saved["base_optimizer_state"]
        for g, mapping in enumerate(saved["param_slice_mappings"]):
            flat = {MASTER: saved["single_partition_of_fp32_groups"][g]}
            for key, value in base["state"].get(g, {}).items():
                if torch.is_tensor(value) and value.shape == flat[MASTER].shape:
                    flat[key] = value
                else:
                    scalars[key] = value
            for local, address in mapping.items():
                for key, value in flat.items():
                    pieces[local][key].append(value.narrow(0, address.start, address.numel))
    for local, by_key in pieces.items():
        shape = shapes[local]
        state = {k: torch.cat(v).view(shape) for k, v in by_key.items()}
        yield entries[0].names[local], {**scalars, **state}


def saved_optimizer_state(
    step_dir: Path, saved: SavedLayout, wanted: set[str]
) -> dict[str, dict[str, Any]]:
    """Whole-model name -> {state key: whole tensor or scalar} for the `wanted` parameters."""
    manifest = read_manifest(step_dir)
    specs = tensor_parallel_specs(manifest.config, saved.layout.tensor, saved.layout.expert)
    slices: dict[tuple[int, int], list[RankFiles]] = defaultdict(list)
    for entry in saved.ranks:
        slices[(entry.pp, entry.tp)].append(entry)
    by_tp: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for (_, tp), entries in sorted(slices.items()):
        if not wanted & set(entries[0].names.values()):
            continue  # a pipeline stage holding none of this rank's parameters
        if saved.optimizer == "torch":
            first = min(entries, key=lambda e: e.dp)
            states = _torch_states(step_dir, first)
        else:
            model_states = _load(step_dir / entries[0].model_file)
            shapes = {k: v for group in model_states["param_shapes"] for k, v in group.items()}
            states = _flat_states(step_dir, entries, shapes)
        for name, state in states:
            if name in wanted:
                by_tp[name][tp] = state
    whole = {}
    for name, ranks in by_tp.items():
        spec = specs.get(name)
        state = {}
        for key, value in ranks[0].items():
            if torch.is_tensor(value) and value.dim() > 0:
                pieces = [ranks[t][key] for t in range(saved.layout.slices)]
                state[key] = unshard(pieces, *spec) if spec else value
            else:
                state[key] = value
        whole[name] = state
    return whole


# -- this rank's share, into the engine ------------------------------------------------------


def check_supported(saved: SavedLayout, engine: Any, with_optimizer: bool) -> None:
    if saved.layout.zero_stage == 3 or engine.zero_optimization_stage() == 3:
        raise ConfigError(
            "resuming at another layout is not supported to or from ZeRO stage 3 yet; resume "
            f"at the saved layout ({saved.layout.describe()})"
        )
    if not with_optimizer:
        return
    kind = optimizer_kind(engine)
    for name in (saved.optimizer, kind):
        if name not in READABLE_OPTIMIZERS:
            raise ConfigError(
                f"resuming at another layout cannot carry the optimizer state of {name} "
                f"(saved at {saved.layout.describe()}); set no_load_optim: true to continue "
                "from the weights, or resume at the saved layout"
            )


def _local_share(module: nn.Module, local: str, whole: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    owner_name, _, param_name = local.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    spec = shard_spec(owner, param_name)
    group = owner.split if isinstance(owner, Experts) else tp  # experts: tensor or expert ranks
    return shard(whole, group, *spec) if spec and group.size > 1 else whole


def load_relayout(
    engine: Any,
    step_dir: Path,
    saved: SavedLayout,
    tp: TPGroup,
    *,
    optimizer: bool,
    new: frozenset[str] = frozenset(),
) -> None:
    """Set this rank's weights (and, with `optimizer`, its optimizer state and schedule) from a
    step saved at another layout; the weights named in `new` (whole-model names, weights alone)
    keep their initial values. Collective: every rank calls it."""
    check_supported(saved, engine, optimizer)
    module = engine.module
    names = whole_model_names(module)
    params = {n: p for n, p in module.named_parameters() if names[n] not in new}
    _, _, weights = load_state_dict(step_dir, verified=True)  # by neox_train.checkpoint.resume
    state = saved_optimizer_state(step_dir, saved, set(names.values())) if optimizer else {}
    masters = {}  # the fp32 master weights where saved (ZeRO, bf16), else the weights
    for local, param in params.items():
        name = names[local]
        if name not in weights:
            raise ConfigError(f"{step_dir} has no weight {name}: it is a different model")
        saved_state = state.get(name, {})
        masters[name] = _fit(saved_state.pop(MASTER, weights[name]), weights[name], name)
        for key, value in saved_state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                saved_state[key] = _fit(value, weights[name], name, zeros=True)
        with torch.no_grad():
            param.copy_(_local_share(module, local, masters[name], tp))
    if optimizer:
        _set_optimizer_state(engine, module, names, params, state, masters, tp, step_dir)
        _load_schedule(engine, step_dir, saved)
    elif hasattr(engine.optimizer, "refresh_fp32_params"):
        # ZeRO and bf16 keep fp32 master copies of the weights: they take the new values (as
        # DeepSpeed's own load of the weights alone does)
        engine.optimizer.refresh_fp32_params()
    dist.barrier()


def load_weights(module: nn.Module, step_dir: Path, tp: TPGroup) -> None:
    """Set a model's weights (a plain module at this rank's layout, not an engine: e.g. the
    frozen reference of a DPO run) to a checkpoint's, read whole and verified against its
    files.json, each parameter this rank's share. Not collective."""
    _, _, weights = load_state_dict(step_dir)
    names = whole_model_names(module)
    for local, param in module.named_parameters():
        name = names[local]
        if name not in weights:
            raise ConfigError(f"{step_dir} has no weight {name}: it is a different model")
        share = _local_share(module, local, weights[name], tp)
        if share.shape != param.shape:
            raise ConfigError(
                f"{step_dir}: weight {name} has shape {tuple(weights[name].shape)}, which does "
                f"not give this model's {tuple(param.shape)} (another vocabulary padding or "
                "model)"
            )
        with torch.no_grad():
            param.copy_(share)


def _fit(saved: torch.Tensor, weight: torch.Tensor, name: str, zeros: bool = False) -> torch.Tensor:
    """`saved` (a master weight or optimizer state) in the shape of `weight`. Only the rows of
    an embedding may differ, when neox-convert reshard padded the vocabulary for its new layout:
    rows beyond the saved ones come from the weight (zeros for optimizer state)."""
    if saved.shape == weight.shape:
        return saved
    if saved.shape[1:] != weight.shape[1:]:
        raise ConfigError(
            f"the saved state of {name} has shape {tuple(saved.shape)}, the weight "
            f"{tuple(weight.shape)}: the checkpoint's files do not belong together"
        )
    rows = weight.shape[0]
    if saved.shape[0] >= rows:
        return saved[:rows]
    rest = torch.zeros_like(weight[saved.shape[0] :]) if zeros else weight[saved.shape[0] :]
    return torch.cat([saved, rest.to(saved.dtype)])


def _per_param(module: nn.Module, local: str, state: dict[str, Any], tp: TPGroup) -> dict[str, Any]:
    """A parameter's share of its state; scalars are copied (an optimizer steps its tensors, such
    as Adam's `step`, in place)."""
    return {key: _share_or_copy(module, local, value, tp) for key, value in state.items()}


def _share_or_copy(module: nn.Module, local: str, value: Any, tp: TPGroup) -> Any:
    if not torch.is_tensor(value):
        return value
    return _local_share(module, local, value, tp) if value.dim() > 0 else value.clone()


def _place(key: str, value: Any, param: nn.Parameter, group: dict[str, Any]) -> Any:
    """Where torch's `Optimizer.load_state_dict` puts a state value: `step` stays on the CPU
    unless the group is fused or capturable; tensors go to the parameter's device."""
    if not torch.is_tensor(value):
        return value
    if key == "step":
        on_device = group.get("fused") or group.get("capturable")
        return value.to(device=param.device, dtype=torch.float32) if on_device else value
    return value.to(param.device)


def _set_optimizer_state(
    engine: Any,
    module: nn.Module,
    names: dict[str, str],
    params: dict[str, nn.Parameter],
    state: dict[str, dict[str, Any]],
    masters: dict[str, torch.Tensor],
    tp: TPGroup,
    step_dir: Path,
) -> None:
    missing = sorted(names[local] for local in params if names[local] not in state)
    if missing:
        raise ConfigError(f"{step_dir} holds no optimizer state for {missing[:5]}")
    kind = optimizer_kind(engine)
    if kind == "torch":
        opt = engine.optimizer
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        for local, param in params.items():
            local_state = _per_param(module, local, state[names[local]], tp)
            group = group_of[id(param)]
            opt.state[param] = {k: _place(k, v, param, group) for k, v in local_state.items()}
        return
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    wrapper = engine.optimizer
    base = wrapper.optimizer
    sample = next(iter(state.values()))
    tensor_keys = [k for k, v in sample.items() if torch.is_tensor(v) and v.dim() > 0]
    scalars = {k: v for k, v in sample.items() if k not in tensor_keys}
    for flat in flat_partitions(engine):
        base.state[flat] = {
            **{k: v.clone() if torch.is_tensor(v) else v for k, v in scalars.items()},
            **{k: torch.zeros_like(flat) for k in tensor_keys},
        }
    relink_flat_state(engine)
    for local, param in params.items():
        whole = state[names[local]]
        safe_set_full_fp32_param(param, _local_share(module, local, masters[names[local]], tp))
        for key in tensor_keys:
            safe_set_full_optimizer_state(param, _local_share(module, local, whole[key], tp), key)


def _load_schedule(engine: Any, step_dir: Path, saved: SavedLayout) -> None:
    """The LR schedule and DeepSpeed's step counters, from the first model-parallel slice."""
    first = min(saved.ranks, key=lambda e: (e.pp, e.tp, e.dp))
    states = _load(step_dir / first.model_file)
    scheduler = engine.lr_scheduler
    if scheduler is not None and states.get("lr_scheduler") is not None:
        scheduler.load_state_dict(states["lr_scheduler"])
        for group, lr in zip(engine.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    engine.global_steps = states.get("global_steps", 0)
    engine.global_samples = states.get("global_samples", 0)
    engine.skipped_steps = states.get("skipped_steps", 0)
