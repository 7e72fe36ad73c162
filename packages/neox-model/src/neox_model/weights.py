"""A `Transformer` from a checkpoint's weights, whatever the layout they were saved at.

The step's `model.json` (`neox_model.checkpoint.manifest`) names every file that holds a piece of
the model's state dict; each file is checked against the step's files.json and read without
unpickling code (`neox_model.checkpoint.safe_load`); tensor-parallel shards are joined.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neox_model.checkpoint.format import FILES, MANIFEST
from neox_model.checkpoint.integrity import resolve_step, verify_step, weight_reader_names
from neox_model.checkpoint.manifest import ModelManifest, read_manifest
from neox_model.checkpoint.safe_load import load_file
from neox_model.config import ModelConfig
from neox_model.moe import Experts
from neox_model.tensor_parallel import TPGroup, shard, shard_spec, unshard
from neox_model.transformer import Transformer

DERIVED_BUFFERS = ("rotary.inv_freq",)  # saved with rotary_save_freqs_buffer, else recomputed


def _rank_states(step_dir: Path, manifest: ModelManifest) -> list[dict[str, torch.Tensor]]:
    """Every model-parallel slice's state dict (tensor- or expert-parallel rank), under the
    Transformer's names."""
    ranks: list[dict[str, torch.Tensor]] = [{} for _ in range(manifest.slices)]
    for weight_file in manifest.files:
        blob = load_file(step_dir / weight_file.file)
        state = blob[weight_file.key] if weight_file.key else blob
        for name, tensor in state.items():
            ranks[weight_file.tp_rank][weight_file.model_name(name)] = tensor
    return ranks


def tensor_parallel_specs(
    config: ModelConfig, tensor_parallel: int, expert_parallel: int = 1
) -> dict[str, tuple[int, int]]:
    """(dim, chunks) of every `Transformer` parameter split over `tensor_parallel` ranks (or,
    with `expert_parallel`, the experts over that many ranks), by name; parameters every rank
    holds whole are left out. Raises ValueError when the model does not split over that many
    ranks."""
    ep = TPGroup(None, 0, expert_parallel) if expert_parallel > 1 else None
    with torch.device("meta"):  # only to learn how each parameter is split
        model = Transformer(config, tp=TPGroup(None, 0, tensor_parallel), ep=ep)
    specs = {}
    for module_name, module in model.named_modules():
        ranks = module.split.size if isinstance(module, Experts) else tensor_parallel
        for name, _ in module.named_parameters(recurse=False):
            spec = shard_spec(module, name)
            if spec is not None and ranks > 1:
                specs[f"{module_name}.{name}" if module_name else name] = spec
    return specs


def verified_step(path: str | Path) -> tuple[Path, ModelManifest]:
    """The complete step a path names (a step directory, or a run directory's `latest`) and its
    manifest, once every file a reader of the model needs matches the step's files.json."""
    step_dir = resolve_step(path)
    if (step_dir / FILES).is_file():  # the manifest says what else to check: checked first
        verify_step(step_dir, [MANIFEST])
    manifest = read_manifest(step_dir)
    verify_step(step_dir, weight_reader_names(step_dir, {f.file for f in manifest.files}))
    return step_dir, manifest


def load_state_dict(
    path: str | Path, *, verified: bool = False
) -> tuple[Path, ModelManifest, dict[str, torch.Tensor]]:
    """The step directory, manifest and full model state dict (on CPU) of a checkpoint, the
    tensor-parallel shards joined. `path` is a step directory or a run directory; `verified`:
    a step directory that `verified_step` has checked."""
    if verified:  # checked by the caller (`verified_step`)
        step_dir, manifest = Path(path), read_manifest(path)
    else:
        step_dir, manifest = verified_step(path)
    ranks = _rank_states(step_dir, manifest)
    if manifest.slices == 1:
        return step_dir, manifest, ranks[0]
    specs = tensor_parallel_specs(
        manifest.config, manifest.tensor_parallel, manifest.expert_parallel
    )
    full = {}
    for name, tensor in ranks[0].items():
        spec = specs.get(name)
        full[name] = unshard([r[name] for r in ranks], *spec) if spec else tensor
    return step_dir, manifest, full


def load_model(
    path: str | Path, tp: TPGroup | None = None, *, verified: bool = False
) -> tuple[Path, ModelManifest, Transformer]:
    """A `Transformer` with the weights of a checkpoint (step or run directory), in eval mode,
    at tensor-parallel size 1 or, with `tp`, as that rank's shard."""
    tp = tp or TPGroup.single()
    step_dir, manifest, state = load_state_dict(path, verified=verified)
    with torch.device("meta"):  # no time spent initialising weights that are overwritten
        model = Transformer(manifest.config, tp=tp, padded_vocab=manifest.padded_vocab)
    model.to_empty(device="cpu")
    reset_buffers(model)
    if tp.size > 1:
        state = {name: _shard_for(model, name, tensor, tp) for name, tensor in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - set(DERIVED_BUFFERS) or unexpected:  # derived buffers were just recomputed
        raise ValueError(
            f"{step_dir}: the checkpoint does not fit its model.json: missing "
            f"{sorted(set(missing) - set(DERIVED_BUFFERS))}, unexpected {sorted(unexpected)}"
        )
    return step_dir, manifest, model.eval()


def _shard_for(model: Transformer, name: str, tensor: torch.Tensor, tp: TPGroup) -> torch.Tensor:
    module_name, _, param = name.rpartition(".")
    spec = shard_spec(model.get_submodule(module_name), param)
    return shard(tensor, tp, *spec) if spec else tensor


def reset_buffers(model: torch.nn.Module) -> None:
    """Recompute the derived buffers (rotary and sinusoidal frequencies, ALiBi slopes) of a
    model allocated with `to_empty`."""
    for module in model.modules():
        reset = getattr(module, "reset_buffers", None)
        if reset is not None:
            reset()
