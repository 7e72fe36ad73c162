"""`from-llama`: Meta's original LLaMA 1/2 checkpoints -> a neox run directory.

A Meta directory holds `params.json` (dim, n_layers, n_heads, n_kv_heads, norm_eps, multiple_of,
ffn_dim_multiplier, rope_theta, vocab_size) and one `consolidated.XX.pth` per model-parallel rank
of Meta's fairscale layers: column-parallel wq, wk, wv, w1, w3 and output are cut along their rows,
row-parallel wo and w2 along their columns, the embedding along its columns (LLaMA 1/2; Llama 3's
along its rows), norms are whole on every rank. The tokenizer (`tokenizer.model`) sits in the
directory or the one above it.

Meta's rotary rotates interleaved pairs (2i, 2i + 1) of each head's dimensions; neox (like Hugging
Face) rotates (i, i + head_dim / 2). Reordering the rows of wq and wk within each head (the
evens first, then the odds) turns one into the other, since attention scores only see q and k
together.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from neox_convert.checkpoint import SINGLE, Imported, check_state, write_import
from neox_convert.errors import ConversionError
from neox_convert.key_map import KeyMap, StateDict, from_format
from neox_convert.mlp_size import with_ffn_size
from neox_convert.precision import Precision
from neox_convert.tokenizer_files import TokenizerFiles
from neox_convert.vocab import with_vocab
from neox_model import ModelConfig, ParallelDims, checkpoint

log = logging.getLogger(__name__)

SHARD = re.compile(r"consolidated\.(\d+)\.pth$")
KEYS = KeyMap(
    format="Meta LLaMA",
    top={
        "embed_in.weight": "tok_embeddings.weight",
        "final_layer_norm.weight": "norm.weight",
        "embed_out.weight": "output.weight",
    },
    layer={
        "input_layernorm.weight": "attention_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "attention.dense.weight": "attention.wo.weight",
        "mlp.dense_4h_to_h.weight": "feed_forward.w2.weight",
    },
    layer_prefix="layers.{}.",
    qkv={
        "attention.query_key_value.weight": (
            "attention.wq.weight",
            "attention.wk.weight",
            "attention.wv.weight",
        ),
    },
    # w1 is the gate (silu(w1 x) * w3 x), w3 the up projection
    up_gate={"mlp.dense_h_to_4h.weight": ("feed_forward.w3.weight", "feed_forward.w1.weight")},
    derived=("rope.freqs",),  # LLaMA 1's saved rotary frequencies
)
# the dim along which model-parallel shards of a tensor are cut, by name suffix; others are whole
SHARD_DIMS = {
    "wq.weight": 0,
    "wk.weight": 0,
    "wv.weight": 0,
    "w1.weight": 0,
    "w3.weight": 0,
    "output.weight": 0,
    "wo.weight": 1,
    "w2.weight": 1,
}


def read_params(directory: Path) -> dict[str, Any]:
    path = directory / "params.json"
    if not path.is_file():
        raise ConversionError(f"{directory} is not a Meta LLaMA checkpoint: no params.json")
    try:
        params: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("dim", "n_layers", "n_heads", "norm_eps") if k not in params]
    if missing:
        raise ConversionError(f"{path} lacks {', '.join(missing)}")
    if params.get("use_scaled_rope"):
        raise ConversionError(f"{path}: use_scaled_rope (neox-model's rotary has no scaling)")
    theta = float(params.get("rope_theta", 10000.0))
    if theta != int(theta):
        raise ConversionError(f"{path}: rope_theta {theta} (neox's rotary base is an integer)")
    return params


def shard_files(directory: Path) -> list[Path]:
    files = sorted(
        (int(m[1]), p) for p in directory.iterdir() if (m := SHARD.match(p.name)) is not None
    )
    if not files:
        raise ConversionError(f"{directory} holds no consolidated.XX.pth weight files")
    if [i for i, _ in files] != list(range(len(files))):
        raise ConversionError(f"{directory}: consolidated.XX.pth files are not numbered 00..N")
    return [p for _, p in files]


def _merge_dim(name: str, shard: torch.Tensor, dim: int) -> int | None:
    """The dim model-parallel shards of `name` are cut along; None for a whole tensor."""
    if name == "tok_embeddings.weight":  # columns in LLaMA 1/2, rows in Llama 3
        return 1 if shard.shape[1] != dim else 0
    return next((d for suffix, d in SHARD_DIMS.items() if name.endswith(suffix)), None)


def merge_shards(shards: list[StateDict], dim: int) -> StateDict:
    """The whole tensors of Meta's model-parallel shards."""
    if len(shards) == 1:
        return shards[0]
    merged = {}
    for name, first in shards[0].items():
        cut = _merge_dim(name, first, dim)
        merged[name] = first if cut is None else torch.cat([s[name] for s in shards], dim=cut)
    return merged


def interleaved_to_half(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection from interleaved rotary pairs to rotate-half order: within
    each head, rows 0, 2, 4, ... then 1, 3, 5, ..."""
    rows, cols = weight.shape
    pairs = weight.reshape(heads, rows // heads // 2, 2, cols)  # (head, pair, member, in)
    return pairs.transpose(1, 2).reshape(rows, cols).contiguous()


def meta_ffn_size(params: dict[str, Any]) -> int | None:
    """Meta's MLP width: 8/3 dim, scaled by ffn_dim_multiplier, rounded up to multiple_of."""
    if "multiple_of" not in params:
        return None
    hidden = int(2 * 4 * params["dim"] / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    multiple: int = params["multiple_of"]
    return multiple * -(-hidden // multiple)


def model_config(params: dict[str, Any], inner: int, seq_length: int) -> ModelConfig:
    """The neox architecture of a Meta LLaMA whose MLP is `inner` wide (vocabulary not set)."""
    heads, kv_heads = params["n_heads"], params.get("n_kv_heads") or params["n_heads"]
    config = ModelConfig(
        num_layers=params["n_layers"],
        hidden_size=params["dim"],
        num_attention_heads=heads,
        num_kv_heads=None if kv_heads == heads else kv_heads,
        seq_length=seq_length,
        max_position_embeddings=seq_length,
        pos_emb="rotary",
        rotary_emb_base=int(float(params.get("rope_theta", 10000.0))),
        norm="rmsnorm",
        rms_norm_epsilon=params["norm_eps"],
        use_bias_in_norms=False,
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
        activation="swiglu",
        no_weight_tying=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return with_ffn_size(config, inner)


def _check_sizes(params: dict[str, Any], merged: StateDict, path: Path) -> tuple[int, int]:
    """(MLP width, vocabulary rows) of the weights, checked against params.json."""
    if "layers.0.feed_forward.w1.weight" not in merged or "output.weight" not in merged:
        raise ConversionError(f"{path}: the weights are not a LLaMA's (no w1 or output)")
    inner = merged["layers.0.feed_forward.w1.weight"].shape[0]
    rows = merged["output.weight"].shape[0]
    expected = meta_ffn_size(params)
    if expected is not None and expected != inner:
        raise ConversionError(
            f"{path}: params.json gives an MLP {expected} wide but the weights are {inner}"
        )
    if params.get("vocab_size", -1) > 0 and params["vocab_size"] != rows:
        raise ConversionError(
            f"{path}: params.json gives vocab_size {params['vocab_size']} but the weights "
            f"have {rows} rows"
        )
    return inner, rows


def read_meta_model(directory: Path, seq_length: int) -> tuple[ModelConfig, StateDict]:
    """The neox config and neox-named state dict of a Meta LLaMA directory."""
    params = read_params(directory)
    shards = []
    for path in shard_files(directory):
        log.info("reading %s", path)
        shards.append(checkpoint.load_file(path))  # weights_only, as every neox reader
    merged = merge_shards(shards, params["dim"])
    inner, rows = _check_sizes(params, merged, directory / "params.json")
    config = with_vocab(model_config(params, inner, seq_length), rows, rows)
    kv_heads = config.kv_heads
    for i in range(config.num_layers):
        for name, heads in (("wq", config.num_attention_heads), ("wk", kv_heads)):
            key = f"layers.{i}.attention.{name}.weight"
            if key in merged:
                merged[key] = interleaved_to_half(merged[key], heads)
    state = from_format(merged, config, KEYS)
    check_state(state, config, rows, str(directory))
    return config, state


def find_tokenizer(directory: Path, given: Path | None) -> TokenizerFiles:
    """`tokenizer.model` given, in the checkpoint directory, or in the one above (Meta's
    releases keep it beside the 7B/, 13B/ ... folders)."""
    if given is not None:
        if not given.is_file():
            raise ConversionError(f"tokenizer {given} not found")
        return TokenizerFiles("SPMTokenizer", given)
    for place in (directory, directory.parent):
        if (place / "tokenizer.model").is_file():
            return TokenizerFiles("SPMTokenizer", place / "tokenizer.model")
    log.warning("no tokenizer.model beside %s: imported without a tokenizer", directory)
    return TokenizerFiles()


def import_from_llama(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    layout: ParallelDims = SINGLE,
    seq_length: int = 4096,
    tokenizer: str | Path | None = None,
    precision: Precision = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a Meta LLaMA 1/2 directory into a neox run directory (step 0)."""

    def read(directory: Path) -> Imported:
        config, state = read_meta_model(directory, seq_length)
        return config, state, find_tokenizer(directory, Path(tokenizer) if tokenizer else None)

    return write_import("from-llama", input_dir, output_dir, read, layout, precision, overwrite)
