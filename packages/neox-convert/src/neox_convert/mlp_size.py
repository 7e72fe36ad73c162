"""A known MLP inner width as GPT-NeoX's sizing keys (`intermediate_size`, `mlp_multiple_of`).

GPT-NeoX sizes a gated MLP from `intermediate_size` I as round_up(int(I * 2/3) // 2, multiple)
(`ModelConfig.ffn_size`): with I = 3 * inner this gives `inner` back for any multiple that divides
it. The multiple written is the largest power of two up to 256 that divides the width, the
GPT-NeoX LLaMA configs' convention (LLaMA-7B: 11008 = 43 * 256).
"""

from __future__ import annotations

import dataclasses

from neox_model import ModelConfig

MAX_MULTIPLE = 256


def with_ffn_size(config: ModelConfig, inner: int) -> ModelConfig:
    """`config` with the sizing keys that make its MLP `inner` wide (checked)."""
    if config.gated:
        multiple = 1
        while multiple < MAX_MULTIPLE and inner % (2 * multiple) == 0:
            multiple *= 2
        sized = dataclasses.replace(config, intermediate_size=3 * inner, mlp_multiple_of=multiple)
    else:
        sized = dataclasses.replace(config, intermediate_size=inner, mlp_multiple_of=1)
    assert sized.ffn_size == inner, (sized.ffn_size, inner)
    return sized
