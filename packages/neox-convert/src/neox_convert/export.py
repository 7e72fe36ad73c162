"""`to-hf`: write a checkpoint as a Hugging Face model directory, atomically.

The directory (config.json, model.safetensors, generation_config.json, tokenizer files) is
built under a temporary name beside the destination and renamed into place only when complete.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from neox_convert.gpt_neox import check_exportable, hf_config, to_hf_state_dict
from neox_model import ModelManifest, load_state_dict

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EOD_TOKEN = "<|endoftext|>"  # GPT-NeoX's end-of-document token


def export_to_hf(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    precision: Precision = "auto",
    overwrite: bool = False,
) -> Path:
    """Export the checkpoint (step or run directory) to `output_dir`; returns the directory."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite")
    step_dir, manifest, state = load_state_dict(checkpoint)
    check_exportable(manifest.config)
    dtype = _DTYPES[precision] if precision != "auto" else next(iter(state.values())).dtype
    tokenizer_file = step_dir / manifest.tokenizer if manifest.tokenizer else None
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        eod_id = _write_tokenizer(tokenizer_file, staging) if tokenizer_file else None
        _write_model(manifest, state, dtype, eod_id, staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s (%s)", step_dir, output_dir, dtype)
    return output_dir


def _write_model(
    manifest: ModelManifest,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    eod_id: int | None,
    out: Path,
) -> None:
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    hf_config(manifest.config, eod_id, dtype, manifest.padded_vocab).save_pretrained(out)
    GenerationConfig(bos_token_id=eod_id, eos_token_id=eod_id).save_pretrained(out)
    save_file(to_hf_state_dict(state, dtype), out / "model.safetensors", metadata={"format": "pt"})


def _write_tokenizer(tokenizer_file: Path, out: Path) -> int | None:
    """Save the tokenizer as a fast HF tokenizer; returns the end-of-document id."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    try:
        Tokenizer.from_file(str(tokenizer_file))
    except Exception:
        log.warning("tokenizer %s is not a tokenizer.json: exported without one", tokenizer_file)
        return None
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    eod_id = tokenizer.get_vocab().get(EOD_TOKEN)
    if eod_id is not None:
        tokenizer.eos_token = tokenizer.bos_token = EOD_TOKEN
    tokenizer.save_pretrained(out)
    return eod_id
