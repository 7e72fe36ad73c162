"""The Hugging Face architectures neox converts to and from, and how each maps onto neox.

Each architecture's module holds its literal key map and config translation; this table names
them once, for export (`--architecture`) and for import (config.json's `architectures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neox_convert import gpt_neox, llama, mistral
from neox_convert.errors import ConversionError, ExportError
from neox_convert.key_map import StateDict
from neox_model import ModelConfig

ArchitectureName = Literal["neox", "llama", "mistral"]


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
        """Refuse configs this architecture cannot reproduce exactly (never approximately)."""
        problems = self.export_problems(config)
        if problems:
            raise ExportError(
                f"no exact Hugging Face {self.family} equivalent for " + "; ".join(problems)
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
}


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
