"""neox-convert: Hugging Face import and export for neox checkpoints."""

from neox_convert.export import export_to_hf
from neox_convert.gpt_neox import ExportError, check_exportable, hf_config, to_hf_state_dict

__all__ = ["ExportError", "check_exportable", "export_to_hf", "hf_config", "to_hf_state_dict"]
__version__ = "0.1.0"
