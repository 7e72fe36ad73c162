"""Weight initialisation methods of GPT-NeoX (`init_method`, `output_layer_init_method`).

normal: N(0, std). scaled_normal: N(0, std / sqrt(2 * num_layers)) (GPT-2 / Megatron).
small_init: N(0, sqrt(2 / (5 * hidden))) (Nguyen & Salazar, 2019).
wang_init: N(0, 2 / (num_layers * sqrt(hidden))) (Wang, GPT-J).
"""

from __future__ import annotations

import math

from neox_model.config import InitMethod, ModelConfig


def init_std(method: InitMethod, config: ModelConfig) -> float:
    match method:
        case "normal":
            return config.init_method_std
        case "scaled_normal":
            return config.init_method_std / math.sqrt(2.0 * config.num_layers)
        case "small_init":
            return math.sqrt(2.0 / (5.0 * config.hidden_size))
        case "wang_init":
            return 2.0 / (config.num_layers * math.sqrt(config.hidden_size))
