"""What a training run needs from the machine, checked before any worker starts and before
anything is written: the token file pairs, the tokenizer, token ids within the tokenizer's
vocabulary, and flash-attn where the config asks for flash attention (a config itself loads and
plans anywhere).

Each token file's id range is scanned once and cached beside it (`neox_data.TokenFile.id_range`),
so the check costs a file read per run: a file made with another tokenizer is one line naming it
here instead of an IndexError in the embedding at the first batch that holds such an id.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from neox_data import NoSpaceError, TokenFile, build_tokenizer
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError
from neox_train.config.sections import DataConfig


def check_inputs(run: RunConfig) -> tuple[str | None, str | None]:
    """(data_path, vocab_file) of a run, once they are known to be usable (data_path is None
    when the run reads train_data_paths)."""
    check_flash_attention(run)
    check_extras(run)
    data = run.data
    files = _token_files(data)
    vocab_file = _tokenizer_file(data)
    tokenizer = build_tokenizer(data.tokenizer_type, vocab_file, data.merge_file)
    made_by = f"vocab_file {vocab_file}" if vocab_file else data.tokenizer_type
    check_token_ids(files, tokenizer.vocab_size, made_by)
    return data.data_path, vocab_file


def _token_files(data: DataConfig) -> list[tuple[str, str]]:
    """(config key, prefix) of every token file the run reads, each checked to exist."""
    if data.data_path is None and not data.train_data_paths and not data.pos_train_data_paths:
        raise ConfigError(
            "data_path (a token file prefix) or train_data_paths is required for training"
        )
    # with files per purpose (or pairs), data_path is not read
    per_purpose = data.dataset_impl == "pairwise" or bool(data.train_data_paths)
    named = [("data_path", data.data_path)] if data.data_path and not per_purpose else []
    for kind in ("train", "valid", "test"):
        keys = [f"{kind}_data_paths", f"{kind}_label_data_paths"]
        keys += [f"{side}_{key}" for side in ("pos", "neg") for key in keys]
        keys.append(f"{kind}_reward_data_paths")
        for key in keys:
            named += [(key, p) for p in getattr(data, key) or ()]
    for key, prefix in named:
        for suffix in (".bin", ".idx"):
            if not Path(prefix + suffix).is_file():
                raise ConfigError(
                    f"{key} {prefix!r}: {prefix}{suffix} not found; make it with "
                    "`neox data preprocess`"
                )
    return named


def _tokenizer_file(data: DataConfig) -> str | None:
    """The run's vocab_file, checked; None for CharLevelTokenizer (bytes, no file). The type is
    one of neox-data's: the config schema checked it (`neox_data.TokenizerType`)."""
    if data.tokenizer_type == "CharLevelTokenizer":
        return None
    if data.vocab_file is None or not Path(data.vocab_file).exists():
        raise ConfigError(f"vocab_file {data.vocab_file!r} not found (the tokenizer file)")
    if data.merge_file is not None and not Path(data.merge_file).is_file():
        raise ConfigError(f"merge_file {data.merge_file!r} not found")
    return data.vocab_file


def check_token_ids(files: Sequence[tuple[str, str]], vocab_size: int, made_by: str) -> None:
    """Every token id of each (config key, prefix) file below `vocab_size`, the tokenizer's
    (`made_by` names it). Label files (keys `*_label_data_paths`) may hold negative labels:
    no loss there."""
    for key, prefix in files:
        if key.endswith("_reward_data_paths"):  # float rewards, no ids
            continue
        tokens = TokenFile(prefix)
        with full_disk_reported():
            found = tokens.id_range()
        if found is None:
            continue
        low, high = found
        what = "label" if key.endswith("_label_data_paths") else "token id"
        where = f"{key} {prefix!r}: {tokens.bin_path} holds {what}"
        if high >= vocab_size:
            raise ConfigError(
                f"{where} {high}, beyond the tokenizer's {vocab_size} ids ({made_by}): the data "
                "was made with another tokenizer; tokenize it again with this one (neox data "
                "preprocess) or set vocab_file to the one it was made with"
            )
        if low < 0 and what == "token id":
            raise ConfigError(
                f"{where} {low}: token ids cannot be negative (a label file's -100 marks no "
                "loss, in *_label_data_paths); tokenize the data again"
            )


@contextmanager
def full_disk_reported() -> Iterator[None]:
    """A full disk while neox-data writes a cache beside a token file is a user error (its
    message names the file)."""
    try:
        yield
    except NoSpaceError as err:
        raise ConfigError(str(err)) from err


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
        "comet_ml": ("use_comet", "comet", run.logging.use_comet),
        "bitsandbytes": ("use_bnb_optimizer", "bnb", run.optimizer.use_bnb_optimizer),
    }
    for module, (key, extra, used) in wanted.items():
        if used and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key} needs the '{extra}' extra: pip install 'neox-train[{extra}]'")


def _uses_s3(run: RunConfig) -> bool:
    load = run.checkpoint.load or ""
    return bool(run.checkpoint.s3_path) or load.startswith("s3://")
