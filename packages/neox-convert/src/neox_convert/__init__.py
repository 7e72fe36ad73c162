"""neox-convert: Hugging Face import and export, raw LLaMA and GPT-NeoX import, resharding."""

from neox_convert.architecture import ARCHITECTURES, Architecture, ArchitectureName
from neox_convert.errors import ConversionError, ExportError
from neox_convert.export import export_to_hf
from neox_convert.gpt_neox import check_exportable, hf_config, to_hf_state_dict
from neox_convert.import_hf import import_from_hf
from neox_model import ParallelDims

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ArchitectureName",
    "ConversionError",
    "ExportError",
    "ParallelDims",
    "check_exportable",
    "export_to_hf",
    "hf_config",
    "import_from_hf",
    "to_hf_state_dict",
]
__version__ = "0.1.0"
