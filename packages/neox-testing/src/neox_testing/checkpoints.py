"""Random tiny neox checkpoints laid out as neox-train saves them, for the tests of the packages
that read them (neox-convert, neox-eval and the end-to-end tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from neox_model import ModelConfig, Transformer, WeightFile


def perturb(model: torch.nn.Module, seed: int = 0) -> Any:
    """Norm weights and biases away from 1 and 0, so that a mix-up would show in the logits;
    returns `model`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def make_checkpoint(
    root: Path,
    config: ModelConfig,
    write_tokenizer: Callable[[Path], object],
    *,
    step: int = 10,
    seed: int = 3,
    layout: Literal["module", "pipeline"] = "module",
    run_config: Mapping[str, Any] | None = None,
) -> Transformer:
    """A run directory `root` holding one step, `global_step{step}`, as neox-train saves it: the
    weights of a perturbed `Transformer(config, seed=seed)` in DeepSpeed's one module file (or
    its pipeline layer files), the tokenizer `write_tokenizer(path)` writes, `run_config` as
    config.yml when given, the manifest, files.json and `latest`. Returns the model, in eval
    mode."""
    import torch

    from neox_model import ModelManifest, Transformer, WeightFile, write_manifest
    from neox_model.checkpoint import seal_step

    directory = root / f"global_step{step}"
    directory.mkdir(parents=True)
    model = perturb(Transformer(config, seed=seed)).eval()
    state = model.state_dict()
    if layout == "module":
        torch.save({"module": state, "ds_config": {}}, directory / "mp_rank_00_model_states.pt")
        files: tuple[WeightFile, ...] = (WeightFile("mp_rank_00_model_states.pt", "module"),)
    else:
        files = _pipeline_files(directory, state, config)
    write_tokenizer(directory / "tokenizer.json")
    if run_config is not None:
        import yaml

        (directory / "config.yml").write_text(yaml.safe_dump(dict(run_config)))
    write_manifest(directory, ModelManifest(config, files, tokenizer="tokenizer.json"))
    seal_step(directory)  # files.json, as a save writes last
    (root / "latest").write_text(f"global_step{step}\n")
    return model


def _pipeline_files(
    step: Path, state: Mapping[str, torch.Tensor], config: ModelConfig
) -> tuple[WeightFile, ...]:
    """DeepSpeed pipeline layer files: layer 0 the embedding, 1..n the blocks (as `block.*`),
    n+1 the final norm, n+2 the output layer."""
    import torch

    from neox_model import WeightFile

    layers: dict[int, dict[str, torch.Tensor]] = {
        0: {},
        config.num_layers + 1: {},
        config.num_layers + 2: {},
    }
    for name, tensor in state.items():
        if name.startswith("layers."):
            index, rest = name[len("layers.") :].split(".", 1)
            layers.setdefault(int(index) + 1, {})["block." + rest] = tensor
        elif name.startswith("final_layer_norm."):
            layers[config.num_layers + 1][name] = tensor
        elif name.startswith("embed_out."):
            layers[config.num_layers + 2][name] = tensor
        else:
            layers[0][name] = tensor
    files = []
    for layer, own in sorted(layers.items()):
        name = f"layer_{layer:02d}-model_00-model_states.pt"
        torch.save(own, step / name)
        block = 1 <= layer <= config.num_layers
        rename = ("block.", f"layers.{layer - 1}.") if block else ("", "")
        files.append(WeightFile(name, "", 0, *rename))
    return tuple(files)
