"""Older GPT-NeoX spellings, rewritten into the keys neox validates before anything else reads
the config, so that configs written for earlier GPT-NeoX versions load unchanged.

- `save_interval`: GPT-NeoX's earlier name of `checkpoint_factor` (a save every N steps).
- `label_data_paths`: GPT-NeoX's earlier name of `train_label_data_paths` (its
  `preprocess_data_with_mask.py` documents it beside train_data_paths).
- `mlp_type: llama`: GPT-NeoX's earlier LLaMA MLP, act(x W_gate) * (x W_up) W_down without biases,
  whose inner width is `intermediate_size` itself, or round_up(int(8 h / 3), 256) without it.
  Today's spelling of that MLP is a gated activation (silu -> swiglu, gelu -> geglu,
  relu -> reglu), `intermediate_size` = 3 x the inner width (`ModelConfig.ffn_size` takes 2/3 of
  it, halved) and `use_bias_in_mlp: false`. `mlp_type: regular` is the plain MLP, the default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from neox_model.config import round_up
from neox_train.schema import ConfigError, Where

# the documentation of each older key, for `neox-train keys`
LEGACY_KEYS: Mapping[str, str] = {
    "save_interval": "GPT-NeoX's earlier name of checkpoint_factor; read as checkpoint_factor.",
    "label_data_paths": (
        "GPT-NeoX's earlier name of train_label_data_paths (label files of train_data_paths); "
        "read as train_label_data_paths."
    ),
    "mlp_type": (
        "GPT-NeoX's earlier MLP switch: 'regular' (the default) or 'llama' (gated, no biases); "
        "read as activation swiglu/geglu/reglu, intermediate_size and use_bias_in_mlp false."
    ),
}

_GATED = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}
_LLAMA_MULTIPLE = 256  # GPT-NeoX's LLaMA MLP rounded its default width to this


def rewrite_legacy_keys(
    values: Mapping[str, Any], where: Where
) -> tuple[dict[str, Any], list[str]]:
    """`values` with the older keys replaced by today's, and one line per rewrite."""
    out, notes = dict(values), []
    for key, rewrite in _REWRITES.items():
        if key in out:
            note = rewrite(out, where)
            notes.append(f"{key}: {note}")
    return out, notes


def _renamed(old: str, new: str) -> Callable[[dict[str, Any], Where], str]:
    """A rewrite of GPT-NeoX's older name `old` of the key `new`: both given must agree."""

    def rewrite(values: dict[str, Any], where: Where) -> str:
        value = values.pop(old)
        current = values.get(new)
        if current is not None and current != value:
            raise ConfigError(
                f"{where(old)}: {old} ({value}) and {new} ({current}) disagree; {old} is "
                f"GPT-NeoX's older name of {new}, keep one"
            )
        values[new] = value
        return f"read as {new}: {value}"

    return rewrite


def _mlp_type(values: dict[str, Any], where: Where) -> str:
    kind = values.pop("mlp_type")
    if kind == "regular":
        return "the plain MLP (the default)"
    if kind != "llama":
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type must be 'regular' or 'llama', got {kind!r}"
        )
    activation = values.get("activation", "gelu")
    if activation not in _GATED:
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama gates with activation silu, gelu or relu, got "
            f"{activation!r}; or drop mlp_type and write a gated activation (e.g. swiglu)"
        )
    if values.get("use_bias_in_mlp") is True:
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama has no MLP biases but use_bias_in_mlp is true"
        )
    hidden, inner = values.get("hidden_size"), values.get("intermediate_size")
    if not isinstance(hidden, int) or not isinstance(inner, int | None):
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama needs hidden_size (and intermediate_size, if "
            f"given) as integers, got {hidden!r} and {inner!r}"
        )
    multiple = values.get("mlp_multiple_of") or _LLAMA_MULTIPLE
    inner = inner or round_up(int(8 * hidden / 3), multiple)
    new = {
        "activation": _GATED[activation],
        "intermediate_size": 3 * inner,
        "mlp_multiple_of": 1,
        "use_bias_in_mlp": False,
    }
    values.update(new)
    return "read as " + ", ".join(f"{k}: {str(v).lower()}" for k, v in new.items())


_REWRITES: dict[str, Callable[[dict[str, Any], Where], str]] = {
    "save_interval": _renamed("save_interval", "checkpoint_factor"),
    "label_data_paths": _renamed("label_data_paths", "train_label_data_paths"),
    "mlp_type": _mlp_type,
}
