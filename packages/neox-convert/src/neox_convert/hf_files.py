"""The files of a Hugging Face model directory: config.json, weights, tokenizer.

Weights are `model.safetensors` or `pytorch_model.bin`, or shards of either listed by an index
file (`model.safetensors.index.json`: {"weight_map": {tensor name: shard file}}). Safetensors are
preferred where both exist. Written weights are safetensors, sharded above a size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from neox_convert.architecture import Architecture, architecture_of
from neox_convert.errors import ConversionError
from neox_convert.key_map import StateDict
from neox_convert.tokenizer_files import TokenizerFiles
from neox_model import checkpoint

log = logging.getLogger(__name__)

SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# tokenizer files a Hugging Face directory may hold: one neox-data reads, in order of
# preference, then the files that go with it
TOKENIZERS = {
    "tokenizer.json": "HFTokenizer",
    "tokenizer.model": "SPMTokenizer",
    "vocab.json": "GPT2BPETokenizer",
}
TOKENIZER_FILES = (*TOKENIZERS, "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
MAX_SHARD_BYTES = 5 * 1024**3


def read_config(directory: Path) -> tuple[Architecture, Any]:
    """The architecture and transformers config of a model directory (errors say what is wrong)."""
    if not directory.is_dir():
        raise ConversionError(f"{directory} is not a directory")
    path = directory / "config.json"
    if not path.is_file():
        raise ConversionError(f"{directory} is not a Hugging Face model directory: no config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path} is not valid JSON: {err}") from err
    arch = architecture_of(raw.get("architectures"), str(path))
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(directory)
    except Exception as err:  # transformers raises many types for a bad config
        raise ConversionError(f"transformers cannot read {path}: {err}") from err
    if type(hf).__name__ != arch.hf_class.replace("ForCausalLM", "Config"):
        raise ConversionError(
            f"{path} names {arch.hf_class} but its model_type {hf.model_type!r} is another model"
        )
    return arch, hf


def _load_file(path: Path) -> StateDict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state: Any = checkpoint.load_file(path)  # weights_only, as every neox reader
    return dict(state)


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, single or sharded."""
    for name in SINGLE_FILES:
        if (directory / name).is_file():
            return [directory / name]
    for name in INDEX_FILES:
        index = directory / name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (directory / f).is_file()]
            if missing or not files:
                raise ConversionError(f"{index} lists missing shard(s): {', '.join(missing)}")
            return [directory / f for f in files]
    raise ConversionError(
        f"{directory} holds no weights: expected one of {', '.join(SINGLE_FILES + INDEX_FILES)}"
    )


def read_weights(directory: Path) -> StateDict:
    """Every tensor of a model directory, on CPU, under its Hugging Face name."""
    state: StateDict = {}
    for path in weight_files(directory):
        log.info("reading %s", path)
        try:
            state.update(_load_file(path))
        except Exception as err:  # safetensors / pickle errors of a damaged file
            raise ConversionError(f"cannot read weights from {path}: {err}") from err
    return state


def _shards(state: StateDict, max_bytes: int) -> list[list[str]]:
    """Tensor names in order, cut into groups of at most `max_bytes` (a bigger tensor alone)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_weights(
    state: StateDict, directory: Path, max_shard_bytes: int = MAX_SHARD_BYTES
) -> None:
    """`model.safetensors`, or shards `model-0000i-of-0000n.safetensors` and their index."""
    from safetensors.torch import save_file

    shards = _shards(state, max_shard_bytes)
    if len(shards) == 1:
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, names in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: state[n] for n in names}, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILES[0]).write_text(json.dumps(index, indent=2) + "\n")


def hf_tokenizer(directory: Path) -> TokenizerFiles:
    """The tokenizer of a model directory: the first of TOKENIZERS present, with the files that
    go with it; no tokenizer when none is present."""
    present = [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not present or present[0].name not in TOKENIZERS:
        return TokenizerFiles()
    vocab, others = present[0], present[1:]
    merges = next((p for p in others if p.name == "merges.txt"), None)
    extra = tuple(p for p in others if p != merges and p.name not in TOKENIZERS)
    return TokenizerFiles(TOKENIZERS[vocab.name], vocab, merges, extra)
