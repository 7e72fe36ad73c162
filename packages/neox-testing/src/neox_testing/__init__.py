"""neox-testing: the helpers the neox packages' tests share (ports, ranks, tiny configs,
checkpoints, tokenizer files, slow steps side by side). Importing it imports neither torch nor
neox-model; the helpers that need them import them when called, so the torch-free packages'
tests can use the rest."""

from neox_testing.checkpoints import make_checkpoint, perturb
from neox_testing.configs import STYLES, TINY_MODEL, TINY_RUN, style, tiny_model, tiny_run
from neox_testing.hf_models import HF_KINDS, hf_model
from neox_testing.lanes import selected_params, side_by_side
from neox_testing.ports import free_port
from neox_testing.ranks import rank_env, spawn_ranks, start_ranks
from neox_testing.tokenizer_files import TOKENIZER_FAMILIES, write_tokenizer_files

__all__ = [
    "HF_KINDS",
    "STYLES",
    "TINY_MODEL",
    "TINY_RUN",
    "TOKENIZER_FAMILIES",
    "free_port",
    "hf_model",
    "make_checkpoint",
    "perturb",
    "rank_env",
    "selected_params",
    "side_by_side",
    "spawn_ranks",
    "start_ranks",
    "style",
    "tiny_model",
    "tiny_run",
    "write_tokenizer_files",
]
