"""`from-neox`: checkpoints written by GPT-NeoX itself (GPT-NeoX-20B, Pythia, users' own runs).

A GPT-NeoX step directory holds DeepSpeed's model files, one per tensor-parallel rank
(`mp_rank_TT_model_states.pt`, {"module": {"sequential.L.name": tensor}}) or, trained with a
pipeline, one per layer and rank (`layer_LL-model_TT-model_states.pt`, {"name": tensor}). Its
layers L are: 0 embedding, 1 (no weights), 2..N+1 the blocks, N+2 (no weights), N+3 final norm,
N+4 output. The architecture comes from its YAML config(s), whose keys are neox's own.

Tensor-parallel pieces join as GPT-NeoX split them: column-parallel rows and row-parallel
columns concatenated; a gated MLP's rows as every rank's [up | gate]; QKV per head (heads, 3,
head_dim), or with grouped-query attention every rank's [q | k | v]; norms averaged (GPT-NeoX's
own tools do so); row-parallel biases summed with `gpt_j_residual`, where GPT-NeoX adds them
on every rank before one all-reduce, and taken once otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Literal

import torch

from neox_convert.checkpoint import SINGLE, Imported, check_state, write_import
from neox_convert.errors import ConversionError
from neox_convert.fused import fuse_qkv, fuse_up_gate
from neox_convert.key_map import StateDict
from neox_convert.mlp_size import with_ffn_size
from neox_convert.precision import Precision
from neox_convert.tokenizer_files import TokenizerFiles
from neox_convert.vocab import with_vocab
from neox_model import LAYER_FILE, MODEL_FILE, ModelConfig, ParallelDims, unshard
from neox_model.checkpoint import load_file
from neox_model.config_files import ConfigFileError, merge_files

log = logging.getLogger(__name__)

# how the tensor-parallel pieces of a tensor make the whole one
Join = Literal["rows", "columns", "mean", "row_bias", "mlp_rows", "qkv", "up", "gate"]
EMBEDDING_KEYS: dict[str, tuple[str, Join]] = {
    "word_embeddings.weight": ("embed_in.weight", "rows"),
    "position_embeddings.weight": ("position_embeddings.weight", "mean"),
}
FINAL_NORM_KEYS: dict[str, tuple[str, Join]] = {
    "norm.weight": ("final_layer_norm.weight", "mean"),  # LayerNorm
    "norm.bias": ("final_layer_norm.bias", "mean"),
    "norm.scale": ("final_layer_norm.weight", "mean"),  # RMSNorm
    "norm.offset": ("final_layer_norm.bias", "mean"),
    "norm.g": ("final_layer_norm.weight", "mean"),  # ScaleNorm
}
OUTPUT_KEYS: dict[str, tuple[str, Join]] = {"final_linear.weight": ("embed_out.weight", "rows")}
BLOCK_KEYS: dict[str, tuple[str, Join]] = {
    "input_layernorm.weight": ("input_layernorm.weight", "mean"),
    "input_layernorm.bias": ("input_layernorm.bias", "mean"),
    "input_layernorm.scale": ("input_layernorm.weight", "mean"),
    "input_layernorm.offset": ("input_layernorm.bias", "mean"),
    "input_layernorm.g": ("input_layernorm.weight", "mean"),
    "post_attention_layernorm.weight": ("post_attention_layernorm.weight", "mean"),
    "post_attention_layernorm.bias": ("post_attention_layernorm.bias", "mean"),
    "post_attention_layernorm.scale": ("post_attention_layernorm.weight", "mean"),
    "post_attention_layernorm.offset": ("post_attention_layernorm.bias", "mean"),
    "post_attention_layernorm.g": ("post_attention_layernorm.weight", "mean"),
    "attention.query_key_value.weight": ("attention.query_key_value.weight", "qkv"),
    "attention.query_key_value.bias": ("attention.query_key_value.bias", "qkv"),
    "attention.dense.weight": ("attention.dense.weight", "columns"),
    "attention.dense.bias": ("attention.dense.bias", "row_bias"),
    # ParallelMLP, named dense_* in older GPT-NeoX and linear1/linear2 in newer
    "mlp.dense_h_to_4h.weight": ("mlp.dense_h_to_4h.weight", "mlp_rows"),
    "mlp.dense_h_to_4h.bias": ("mlp.dense_h_to_4h.bias", "mlp_rows"),
    "mlp.linear1.weight": ("mlp.dense_h_to_4h.weight", "mlp_rows"),
    "mlp.linear1.bias": ("mlp.dense_h_to_4h.bias", "mlp_rows"),
    "mlp.dense_4h_to_h.weight": ("mlp.dense_4h_to_h.weight", "columns"),
    "mlp.dense_4h_to_h.bias": ("mlp.dense_4h_to_h.bias", "row_bias"),
    "mlp.linear2.weight": ("mlp.dense_4h_to_h.weight", "columns"),
    "mlp.linear2.bias": ("mlp.dense_4h_to_h.bias", "row_bias"),
    # LLaMAParallelMLP: w2(act(w1 x) * w3 x)
    "mlp.w1.weight": ("mlp.dense_h_to_4h.weight", "gate"),
    "mlp.w3.weight": ("mlp.dense_h_to_4h.weight", "up"),
    "mlp.w2.weight": ("mlp.dense_4h_to_h.weight", "columns"),
}
IGNORED = ("attention.rotary_emb.inv_freq",)  # recomputed from the config
# GPT-NeoX features neox-model does not have: key -> the values it can reproduce (neox's
# use_qk_layernorm normalises each head; GPT-NeoX's, a rank's heads together)
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "use_qk_layernorm": (False, None),
    "use_mup": (False, None),
    "moe_num_experts": (1, None),
    "output_layer_parallelism": ("column", None),
    "opt_pos_emb_offset": (0, None),
}
# GPT-NeoX's LLaMA MLP (mlp_type: llama) gates with its activation: neox's gated name for it
GATED = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}
SEQUENTIAL = re.compile(r"sequential\.(\d+)\.(.+)$")

Ranks = list[dict[tuple[int, str], torch.Tensor]]  # per tensor rank: (layer, name) -> piece


def read_yaml(paths: list[Path]) -> dict[str, Any]:
    """GPT-NeoX's YAML files merged left to right as neox-train merges them (nested mappings
    merged, keys with "-" read as "_", a key repeated within a file refused)."""
    try:
        return merge_files(paths).values
    except ConfigFileError as err:
        raise ConversionError(str(err)) from err


def _attention_here(fields: dict[str, Any]) -> dict[str, Any]:
    """`attention_config` with GPT-NeoX's "all" as the layer count, and "flash" read as
    "global" where flash-attn is not installed (the weights are the same, and this machine
    could not build the config otherwise)."""
    spec = fields.get("attention_config")
    if not spec:
        return fields
    layers = fields.get("num_layers")
    spec = [[kinds, layers if n == "all" else n] for kinds, n in spec]
    if importlib.util.find_spec("flash_attn") is None:
        if any("flash" in kinds for kinds, _ in spec):
            log.warning("attention_config: 'flash' written as 'global' (flash-attn not installed)")
        spec = [[["global" if k == "flash" else k for k in kinds], n] for kinds, n in spec]
    return {**fields, "attention_config": spec}


def model_config(values: dict[str, Any], gpt_neox: bool = True) -> ModelConfig:
    """The neox architecture of a GPT-NeoX config (vocabulary and MLP width not yet set); with
    `gpt_neox` false, of a neox run config, whose keys are neox's own (its use_qk_layernorm is
    per head, not GPT-NeoX's)."""
    unsupported = UNSUPPORTED if gpt_neox else {}
    problems = [f"{k} {values[k]!r}" for k, ok in unsupported.items() if values.get(k) not in ok]
    fields = {f.name: values[f.name] for f in dataclasses.fields(ModelConfig) if f.name in values}
    fields.pop("vocab_size", None)
    if values.get("mlp_type") == "llama":
        activation = fields.get("activation", "gelu")
        if activation not in GATED:
            problems.append(f"mlp_type llama with activation {activation!r}")
        fields["activation"] = GATED.get(activation, activation)
    if problems:
        raise ConversionError(
            "neox-model cannot reproduce this GPT-NeoX model: " + "; ".join(problems)
        )
    try:
        return ModelConfig.from_dict(_attention_here(fields))
    except (TypeError, ValueError) as err:
        raise ConversionError(f"the GPT-NeoX config does not describe a neox model: {err}") from err


def _load(path: Path) -> Any:
    return load_file(path)  # weights_only; a planted pickle is an UnsafeCheckpoint


def _pieces(files: list[tuple[re.Match[str], Path]], rank_group: int) -> Ranks:
    """An empty per-rank table for files whose tensor rank is match group `rank_group`."""
    return [{} for _ in range(1 + max(int(match[rank_group]) for match, _ in files))]


def read_ranks(step_dir: Path) -> Ranks:
    """Every tensor rank's pieces, from pipeline layer files or sequential model files."""
    layer_files = [(m, p) for p in sorted(step_dir.iterdir()) if (m := LAYER_FILE.match(p.name))]
    if layer_files:
        ranks = _pieces(layer_files, 2)
        for match, path in layer_files:
            for name, tensor in _load(path).items():
                ranks[int(match[2])][(int(match[1]), name)] = tensor
        return ranks
    model_files = [(m, p) for p in sorted(step_dir.iterdir()) if (m := MODEL_FILE.match(p.name))]
    if not model_files:
        raise ConversionError(
            f"{step_dir} holds no GPT-NeoX model files (mp_rank_XX_model_states.pt or "
            "layer_XX-model_YY-model_states.pt)"
        )
    ranks = _pieces(model_files, 1)
    for match, path in model_files:
        module = (_load(path) or {}).get("module") or {}
        for name, tensor in module.items():
            parts = SEQUENTIAL.match(name)
            if parts is None:
                raise ConversionError(f"{path}: {name!r} is not a GPT-NeoX sequential.N name")
            ranks[int(match[1])][(int(parts[1]), parts[2])] = tensor
    return ranks


def neox_name(layer: int, key: str, num_layers: int) -> tuple[str, Join] | None:
    """The neox tensor a GPT-NeoX layer's tensor is (part of), and how its pieces join."""
    if key.endswith(IGNORED):
        return None
    table, prefix = {}, ""
    if layer == 0:
        table = EMBEDDING_KEYS
    elif 2 <= layer <= num_layers + 1:
        table, prefix = BLOCK_KEYS, f"layers.{layer - 2}."
    elif layer == num_layers + 3:
        table = FINAL_NORM_KEYS
    elif layer == num_layers + 4:
        table = OUTPUT_KEYS
        if key == "word_embeddings.weight":  # the tied input embedding, again
            return None
    if key not in table:
        raise ConversionError(
            f"GPT-NeoX layer {layer}'s {key!r} has no place in a {num_layers}-layer model "
            "(do the config and the checkpoint belong together?)"
        )
    name, how = table[key]
    return prefix + name, how


def _join_qkv(pieces: list[torch.Tensor], config: ModelConfig) -> torch.Tensor:
    if config.kv_heads == config.num_attention_heads:
        return torch.cat(pieces)  # per head (heads, 3, head_dim) on every rank
    ranks = len(pieces)
    sizes = [config.num_attention_heads // ranks * config.head_dim]
    sizes += [config.kv_heads // ranks * config.head_dim] * 2
    q, k, v = (torch.cat(parts) for parts in zip(*(p.split(sizes) for p in pieces), strict=True))
    return fuse_qkv(q, k, v, config)


def join(pieces: list[torch.Tensor], how: Join, config: ModelConfig) -> torch.Tensor:
    """The whole tensor from its tensor-parallel pieces (see the module docstring)."""
    match how:
        case "rows" | "up" | "gate":
            return torch.cat(pieces)
        case "columns":
            return torch.cat(pieces, dim=1)
        case "mean":
            same = all(torch.equal(p, pieces[0]) for p in pieces)
            return pieces[0] if same else torch.stack(pieces).float().mean(0).to(pieces[0].dtype)
        case "row_bias":
            return torch.stack(pieces).sum(0) if config.gpt_j_residual else pieces[0]
        case "mlp_rows":
            return unshard(pieces, 0, 2 if config.gated else 1)
        case "qkv":
            return _join_qkv(pieces, config)


def neox_state(ranks: Ranks, config: ModelConfig) -> StateDict:
    """The full neox-named state dict of GPT-NeoX's per-rank pieces."""
    state: StateDict = {}
    halves: dict[str, dict[str, torch.Tensor]] = {}  # LLaMA MLP: name -> {"up": .., "gate": ..}
    for layer, key in ranks[0]:
        mapped = neox_name(layer, key, config.num_layers)
        if mapped is None:
            continue
        name, how = mapped
        if any((layer, key) not in rank for rank in ranks):
            raise ConversionError(f"layer {layer}'s {key!r} is missing from some tensor ranks")
        tensor = join([rank[(layer, key)] for rank in ranks], how, config)
        if how in ("up", "gate"):
            halves.setdefault(name, {})[how] = tensor
        else:
            state[name] = tensor
    for name, pair in halves.items():
        if set(pair) != {"up", "gate"}:
            raise ConversionError(
                f"the checkpoint has one of mlp.w1 / mlp.w3 but not both ({name})"
            )
        state[name] = fuse_up_gate(pair["up"], pair["gate"])
    return state


def yaml_tokenizer(values: dict[str, Any], override: Path | None) -> TokenizerFiles:
    """The tokenizer the GPT-NeoX config names (`override` replaces its vocab_file), if its
    files are here."""
    kind = values.get("tokenizer_type")
    vocab = override or (Path(values["vocab_file"]) if values.get("vocab_file") else None)
    merges = Path(values["merge_file"]) if values.get("merge_file") else None
    missing = [str(p) for p in (vocab, merges) if p is not None and not p.is_file()]
    if kind is None or vocab is None or missing:
        log.warning(
            "tokenizer %s not found: imported without one; the vocabulary is the embedding's "
            "rows (pass --tokenizer)",
            ", ".join(missing) or "(none configured)",
        )
        return TokenizerFiles()
    return TokenizerFiles(kind, vocab, merges)


def find_step(directory: Path) -> Path:
    """The step directory: `directory` itself, or the one its `latest` names."""
    pointer = directory / "latest"
    if pointer.is_file() and not any(MODEL_FILE.match(p.name) for p in directory.iterdir()):
        return directory / pointer.read_text().strip()
    return directory


def read_gpt_neox_model(
    step_dir: Path, config_files: list[Path], tokenizer: Path | None
) -> tuple[ModelConfig, StateDict, TokenizerFiles]:
    """The neox config, full neox-named state dict and tokenizer of a GPT-NeoX checkpoint."""
    if not step_dir.is_dir():
        raise ConversionError(f"{step_dir} is not a directory")
    files = config_files or sorted((step_dir / "configs").glob("*.yml"))
    if not files:
        raise ConversionError(
            f"no GPT-NeoX config: pass --config_file ({step_dir}/configs/ is empty)"
        )
    values = read_yaml(files)
    config = model_config(values)
    ranks = read_ranks(step_dir)
    state = neox_state(ranks, config)
    if "embed_in.weight" not in state or "layers.0.mlp.dense_4h_to_h.weight" not in state:
        raise ConversionError(f"{step_dir}: the files hold no GPT-NeoX embedding or blocks")
    config = with_ffn_size(config, state["layers.0.mlp.dense_4h_to_h.weight"].shape[1])
    rows = state["embed_in.weight"].shape[0]
    files_of_tokenizer = yaml_tokenizer(values, tokenizer)
    config = with_vocab(config, files_of_tokenizer.vocab_size() or rows, rows)
    check_state(state, config, rows, str(step_dir))
    return config, state, files_of_tokenizer


def import_from_neox(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    config_files: list[str | Path] | None = None,
    tokenizer: str | Path | None = None,
    layout: ParallelDims = SINGLE,
    precision: Precision = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a checkpoint written by GPT-NeoX (a step directory, or the save directory whose
    `latest` names one) into a neox run directory (step 0)."""
    paths = [Path(p) for p in config_files or []]

    def read(directory: Path) -> Imported:
        return read_gpt_neox_model(
            find_step(directory), paths, Path(tokenizer) if tokenizer else None
        )

    return write_import("from-neox", input_dir, output_dir, read, layout, precision, overwrite)
