"""Rotary settings of a Hugging Face config as neox's `rotary_pct`, `rotary_emb_base` and
`rope_scaling`, and back.

transformers (5.x) normalises every rotary setting into `config.rope_parameters` (`rope_type`,
`rope_theta`, `partial_rotary_factor` and the type's own keys), also for old config.json files
(`rope_scaling` beside `rope_theta`). neox-model's `RopeScaling` has Hugging Face's names and
formulas for linear, llama3 and yarn, so those map key for key. Refused, with the reason: a
rope_theta that is not an integer (neox's base is one), dynamic (see `REFUSED`), longrope and
any other type.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neox_model import ModelConfig, RopeScaling

# the keys of `rope_parameters` each scaling type reads, named as RopeScaling names them
SCALING_KEYS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"),
    "yarn": (
        "factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "attention_factor",
        "mscale",
        "mscale_all_dim",
        "truncate",
    ),
}
# the keys that are not floats
EXACT = ("original_max_position_embeddings", "truncate")
# what Hugging Face assumes for an absent (or, for the betas, zero) yarn key: not written
HF_DEFAULTS: dict[str, Any] = {"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True}
# rope types neox-model cannot reproduce exactly, and why
REFUSED = {
    "dynamic": (
        "Hugging Face grows the base past its max_position_embeddings and keeps a grown base "
        "from one call to the next; neox-model grows it per call, within its own positions"
    ),
    "longrope": "neox-model has no per-frequency long and short factors",
}


def _rope(hf: Any) -> dict[str, Any]:
    return dict(getattr(hf, "rope_parameters", None) or {})


def rope_problems(hf: Any) -> list[str]:
    """Why neox's rotary cannot reproduce `hf`'s exactly; empty when it can."""
    rope = _rope(hf)
    problems = []
    kind = rope.get("rope_type", "default")
    if kind in REFUSED:
        problems.append(f"rope_type {kind!r} ({REFUSED[kind]})")
    elif kind != "default" and kind not in SCALING_KEYS:
        problems.append(
            f"rope_type {kind!r} (neox-model scales rotary by {', '.join(SCALING_KEYS)})"
        )
    theta = float(rope.get("rope_theta", 10000.0))
    if theta != int(theta):
        problems.append(f"rope_theta {theta} (neox-model's rotary_emb_base is an integer)")
    return problems


def rope_base(hf: Any) -> int:
    return int(float(_rope(hf).get("rope_theta", 10000.0)))


def rotary_fraction(hf: Any) -> float:
    return float(_rope(hf).get("partial_rotary_factor", 1.0))


def rope_scaling(hf: Any) -> RopeScaling | None:
    """neox's `rope_scaling` of a config `rope_problems` accepts; None when unscaled."""
    rope = _rope(hf)
    kind = rope.get("rope_type", "default")
    if kind == "default":
        return None
    values = {k: rope[k] for k in SCALING_KEYS[kind] if rope.get(k) is not None}
    if kind == "yarn":
        if "factor" not in values:  # Hugging Face's yarn then scales to max_position_embeddings
            original = values["original_max_position_embeddings"]
            values["factor"] = hf.max_position_embeddings / original
        values = {k: v for k, v in values.items() if k not in ("beta_fast", "beta_slow") or v}
    values = {k: v if k in EXACT else float(v) for k, v in values.items()}
    return RopeScaling(rope_type=kind, **values)


def scaling_problems(config: ModelConfig) -> list[str]:
    """Why no Hugging Face config reproduces `config`'s rotary scaling exactly; empty when one
    does."""
    scaling = config.rope_scaling
    if scaling is None or scaling.rope_type in SCALING_KEYS:
        return []
    reason = REFUSED.get(scaling.rope_type, "Hugging Face has no such rope_type")
    return [f"rope_scaling {scaling.rope_type} ({reason})"]


def rope_parameters(config: ModelConfig, fraction: bool = False) -> dict[str, Any]:
    """Hugging Face's `rope_parameters` of `config` (with `partial_rotary_factor` when
    `fraction`); keys left at Hugging Face's defaults are not written."""
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(config.rotary_emb_base)}
    if fraction:
        params["partial_rotary_factor"] = config.rotary_pct
    scaling = config.rope_scaling
    if scaling is not None:
        values = dataclasses.asdict(scaling)
        params["rope_type"] = scaling.rope_type
        params |= {
            k: values[k] if k in EXACT else float(values[k])
            for k in SCALING_KEYS[scaling.rope_type]
            if values[k] is not None and HF_DEFAULTS.get(k) != values[k]
        }
    return params
