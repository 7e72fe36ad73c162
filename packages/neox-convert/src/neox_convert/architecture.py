"""The Hugging Face architectures neox converts to and from, and how each maps onto neox.

Each architecture's module holds its literal key map and config translation; this table names
them once, for export (`--architecture`) and for import (config.json's `architectures`). Export
without `--architecture` takes the first in the table's order that reproduces the checkpoint's
model exactly (`architecture_for`); a refusal names the others that would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neox_convert import gemma2, gpt_neox, llama, mistral, moe_families, olmo2, qwen
from neox_convert.errors import ConversionError, ExportError
from neox_convert.key_map import StateDict
from neox_model import ModelConfig

ArchitectureName = Literal[
    "neox", "llama", "mistral", "qwen2", "qwen3", "olmo2", "gemma2", "mixtral", "qwen2_moe"
]


@dataclass(frozen=True)
class Architecture:
    name: ArchitectureName  # the `--architecture` value
    hf_class: str  # config.json's "architectures" entry
    family: str  # for messages
    export_problems: Callable[[ModelConfig], list[str]]
    hf_config: Callable[[ModelConfig, int | None, torch.dtype, int | None], Any]
    to_hf: Callable[[StateDict, ModelConfig], StateDict]
    model_config: Callable[[Any], ModelConfig]  # from the transformers config; vocab unset
    from_hf: Callable[[StateDict, ModelConfig], StateDict]

    def check_exportable(self, config: ModelConfig) -> None:
        """Refuse configs this architecture cannot reproduce exactly (never approximately),
        naming the architectures that can."""
        problems = self.export_problems(config)
        if problems:
            others = [a.name for a in ARCHITECTURES.values() if not a.export_problems(config)]
            hint = f"; --architecture {' or '.join(others)} reproduces it exactly" if others else ""
            raise ExportError(
                f"no exact Hugging Face {self.family} equivalent for " + "; ".join(problems) + hint
            )


ARCHITECTURES: dict[ArchitectureName, Architecture] = {
    "neox": Architecture(
        "neox",
        "GPTNeoXForCausalLM",
        "GPTNeoX",
        gpt_neox.export_problems,
        gpt_neox.hf_config,
        gpt_neox.to_hf,
        gpt_neox.model_config,
        gpt_neox.from_hf,
    ),
    "llama": Architecture(
        "llama",
        "LlamaForCausalLM",
        "Llama",
        llama.export_problems,
        llama.hf_config,
        llama.to_hf,
        llama.model_config,
        llama.from_hf,
    ),
    "mistral": Architecture(
        "mistral",
        "MistralForCausalLM",
        "Mistral",
        mistral.export_problems,
        mistral.hf_config,
        mistral.to_hf,
        mistral.model_config,
        mistral.from_hf,
    ),
    "qwen2": Architecture(
        "qwen2",
        "Qwen2ForCausalLM",
        "Qwen2",
        qwen.qwen2_export_problems,
        qwen.qwen2_hf_config,
        llama.to_hf,
        qwen.qwen2_model_config,
        llama.from_hf,
    ),
    "qwen3": Architecture(
        "qwen3",
        "Qwen3ForCausalLM",
        "Qwen3",
        qwen.qwen3_export_problems,
        qwen.qwen3_hf_config,
        qwen.qwen3_to_hf,
        qwen.qwen3_model_config,
        qwen.qwen3_from_hf,
    ),
    "olmo2": Architecture(
        "olmo2",
        "Olmo2ForCausalLM",
        "OLMo2",
        olmo2.export_problems,
        olmo2.hf_config,
        olmo2.to_hf,
        olmo2.model_config,
        olmo2.from_hf,
    ),
    "gemma2": Architecture(
        "gemma2",
        "Gemma2ForCausalLM",
        "Gemma2",
        gemma2.export_problems,
        gemma2.hf_config,
        gemma2.to_hf,
        gemma2.model_config,
        gemma2.from_hf,
    ),
    "mixtral": Architecture(
        "mixtral",
        "MixtralForCausalLM",
        "Mixtral",
        moe_families.mixtral_export_problems,
        moe_families.mixtral_hf_config,
        moe_families.mixtral_to_hf,
        moe_families.mixtral_model_config,
        moe_families.mixtral_from_hf,
    ),
    "qwen2_moe": Architecture(
        "qwen2_moe",
        "Qwen2MoeForCausalLM",
        "Qwen2MoE",
        moe_families.qwen2_moe_export_problems,
        moe_families.qwen2_moe_hf_config,
        moe_families.qwen2_moe_to_hf,
        moe_families.qwen2_moe_model_config,
        moe_families.qwen2_moe_from_hf,
    ),
}


def architecture_for(config: ModelConfig) -> Architecture:
    """The first architecture of the table that reproduces `config` exactly."""
    for arch in ARCHITECTURES.values():
        if not arch.export_problems(config):
            return arch
    reasons = " ".join(
        f"{a.family}: {'; '.join(a.export_problems(config))}." for a in ARCHITECTURES.values()
    )
    raise ExportError(f"no Hugging Face architecture reproduces this model exactly. {reasons}")


def architecture_of(hf_classes: list[str] | None, where: str) -> Architecture:
    """The architecture a config.json's `architectures` names; an error for any other."""
    for arch in ARCHITECTURES.values():
        if arch.hf_class in (hf_classes or []):
            return arch
    supported = ", ".join(a.hf_class for a in ARCHITECTURES.values())
    raise ConversionError(
        f"{where} describes {', '.join(hf_classes or ['no architecture'])}; neox imports "
        f"{supported}"
    )
