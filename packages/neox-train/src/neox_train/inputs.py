"""What a training run needs from the machine, checked before any worker starts and before
anything is written: the token file pair, the tokenizer, and flash-attn where the config asks for
flash attention (a config itself loads and plans anywhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from neox_data import SUPPORTED_TOKENIZER_TYPES
from neox_train.run_config import RunConfig
from neox_train.schema import ConfigError


def check_inputs(run: RunConfig) -> tuple[str | None, str | None]:
    """(data_path, vocab_file) of a run, once they are known to be usable (data_path is None
    when the run reads train_data_paths)."""
    check_flash_attention(run)
    check_extras(run)
    data = run.data
    if data.data_path is None and not data.train_data_paths:
        raise ConfigError(
            "data_path (a token file prefix) or train_data_paths is required for training"
        )
    named = [("data_path", data.data_path)] if data.data_path else []
    for kind in ("train", "valid", "test"):
        for key in (f"{kind}_data_paths", f"{kind}_label_data_paths"):
            named += [(key, p) for p in getattr(data, key) or ()]
    for key, prefix in named:
        for suffix in (".bin", ".idx"):
            if not Path(prefix + suffix).is_file():
                raise ConfigError(
                    f"{key} {prefix!r}: {prefix}{suffix} not found; make it with "
                    "`neox data preprocess`"
                )
    if data.tokenizer_type not in SUPPORTED_TOKENIZER_TYPES:
        raise ConfigError(
            f"tokenizer_type {data.tokenizer_type!r} is not supported yet; use one of "
            f"{', '.join(SUPPORTED_TOKENIZER_TYPES)}"
        )
    if data.tokenizer_type == "CharLevelTokenizer":
        return data.data_path, None  # bytes: no vocabulary file
    if data.vocab_file is None or not Path(data.vocab_file).exists():
        raise ConfigError(f"vocab_file {data.vocab_file!r} not found (the tokenizer file)")
    if data.merge_file is not None and not Path(data.merge_file).is_file():
        raise ConfigError(f"merge_file {data.merge_file!r} not found")
    return data.data_path, data.vocab_file


def check_flash_attention(run: RunConfig) -> None:
    """Refuse `attention_config` 'flash' layers on a machine without flash-attn."""
    if "flash" in run.model.attention_types and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "attention_config asks for 'flash' attention but flash-attn is not installed; "
            "install the GPU extra (pip install 'neox-model[flash]') or use 'global'"
        )


def check_extras(run: RunConfig) -> None:
    """The optional packages a run asks for are installed (else: which extra to install)."""
    import importlib.util

    wanted = {
        "neox_eval": ("eval_tasks", "eval", bool(run.training.eval_tasks)),
        "boto3": ("s3_path / an s3:// load", "s3", _uses_s3(run)),
    }
    for module, (key, extra, used) in wanted.items():
        if used and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key} needs the '{extra}' extra: pip install 'neox-train[{extra}]'")


def _uses_s3(run: RunConfig) -> bool:
    load = run.checkpoint.load or ""
    return bool(run.checkpoint.s3_path) or load.startswith("s3://")
