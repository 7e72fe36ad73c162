"""Hugging Face `MistralForCausalLM` <-> neox.

Mistral's files are Llama's (same names, `llama.KEYS`), without biases, plus sliding-window
attention. Hugging Face's `sliding_window` counts the query's own position (a query at i sees keys
i - sliding_window < j <= i); neox's `sliding_window_width` counts the keys before it, so
sliding_window = sliding_window_width + 1.
"""

from __future__ import annotations

from typing import Any

import torch

from neox_convert.llama import (
    NO_BIASES,
    bias_problems,
    common_hf_config,
    common_model_config,
    family_problems,
    from_hf,
    import_problems,
    to_hf,
)
from neox_model import ModelConfig

__all__ = [
    "export_problems",
    "from_hf",
    "hf_config",
    "hf_window",
    "import_problems",
    "model_config",
    "to_hf",
    "window_problems",
]


def export_problems(config: ModelConfig) -> list[str]:
    """Why Mistral cannot reproduce `config` exactly; empty when it can."""
    problems = family_problems(config, "Mistral")
    return problems + bias_problems(config, (NO_BIASES,), "Mistral has no biases")


def hf_window(config: ModelConfig) -> int | None:
    """Hugging Face's `sliding_window` for neox's `sliding_window_width`."""
    width = config.sliding_window_width
    return None if width is None else width + 1


def hf_config(
    config: ModelConfig, eod_id: int | None, dtype: torch.dtype, padded_vocab: int | None = None
) -> Any:
    """The MistralConfig of `config`; `padded_vocab` is the exported embedding's row count."""
    from transformers import MistralConfig

    return MistralConfig(
        **common_hf_config(config, eod_id, padded_vocab or config.padded_vocab_size),
        sliding_window=hf_window(config),
        architectures=["MistralForCausalLM"],
        dtype=dtype,
    )


def window_problems(window: int | None) -> list[str]:
    """Why neox-model cannot reproduce Hugging Face's `sliding_window` (Mistral's or Qwen's)."""
    if window is not None and window < 2:
        return [f"sliding_window {window} (a query that sees no key before itself)"]
    return []


def model_config(hf: Any) -> ModelConfig:
    """The neox architecture of a MistralConfig (vocabulary not set)."""
    window = hf.sliding_window
    return common_model_config(
        hf,
        "Mistral",
        window_problems(window),
        use_bias_in_attn_linear=False,
        use_bias_in_mlp=False,
        sliding_window_width=None if window is None or window < 2 else window - 1,
    )
