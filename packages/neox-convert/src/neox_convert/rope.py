"""Rotary settings of a Hugging Face config, as neox's `rotary_pct` and `rotary_emb_base`.

transformers (5.x) normalises every rotary setting into `config.rope_parameters`
(`rope_type`, `rope_theta`, `partial_rotary_factor`), also for old config.json files.
neox-model's rotary is the unscaled one with an integer base.
"""

from __future__ import annotations

from typing import Any


def rope_problems(hf: Any) -> list[str]:
    """Why neox's rotary cannot reproduce `hf`'s exactly; empty when it can."""
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    problems = []
    kind = rope.get("rope_type", "default")
    if kind != "default":
        problems.append(f"rope_type {kind!r} (neox-model's rotary has no frequency scaling)")
    theta = float(rope.get("rope_theta", 10000.0))
    if theta != int(theta):
        problems.append(f"rope_theta {theta} (neox-model's rotary_emb_base is an integer)")
    return problems


def rope_base(hf: Any) -> int:
    return int(float(dict(hf.rope_parameters or {}).get("rope_theta", 10000.0)))


def rotary_fraction(hf: Any) -> float:
    return float(dict(hf.rope_parameters or {}).get("partial_rotary_factor", 1.0))


def rope_parameters(base: int) -> dict[str, Any]:
    """The `rope_parameters` of neox's rotary with every dimension rotated."""
    return {"rope_type": "default", "rope_theta": float(base)}
