"""GPT-NeoX compatibility: the keys of GPT-NeoX that neox accepts and ignores (`IGNORED_KEYS`),
the ones it refuses for a missing feature (`UNSUPPORTED_KEYS`), and older spellings
(`LEGACY_KEYS`), rewritten into the keys neox validates before anything else reads
the config, so that configs written for earlier GPT-NeoX versions load unchanged.

- `save_interval`: GPT-NeoX's earlier name of `checkpoint_factor` (a save every N steps).
- `label_data_paths`: GPT-NeoX's earlier name of `train_label_data_paths` (its
  `preprocess_data_with_mask.py` documents it beside train_data_paths).
- `mlp_type: llama`: GPT-NeoX's earlier LLaMA MLP, act(x W_gate) * (x W_up) W_down without biases,
  whose inner width is `intermediate_size` itself, or round_up(int(8 h / 3), 256) without it.
  Today's spelling of that MLP is a gated activation (silu -> swiglu, gelu -> geglu,
  relu -> reglu), `intermediate_size` = 3 x the inner width (`ModelConfig.ffn_size` takes 2/3 of
  it, halved) and `use_bias_in_mlp: false`. `mlp_type: regular` is the plain MLP, the default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from neox_model.config import round_up
from neox_train.config.schema import ConfigError, Where

# the documentation of each older key, for `neox-train keys`
LEGACY_KEYS: Mapping[str, str] = {
    "save_interval": "GPT-NeoX's earlier name of checkpoint_factor; read as checkpoint_factor.",
    "label_data_paths": (
        "GPT-NeoX's earlier name of train_label_data_paths (label files of train_data_paths); "
        "read as train_label_data_paths."
    ),
    "mlp_type": (
        "GPT-NeoX's earlier MLP switch: 'regular' (the default) or 'llama' (gated, no biases); "
        "read as activation swiglu/geglu/reglu, intermediate_size and use_bias_in_mlp false."
    ),
}

_GATED = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}
_LLAMA_MULTIPLE = 256  # GPT-NeoX's LLaMA MLP rounded its default width to this


def rewrite_legacy_keys(
    values: Mapping[str, Any], where: Where
) -> tuple[dict[str, Any], list[str]]:
    """`values` with the older keys replaced by today's, and one line per rewrite."""
    out, notes = dict(values), []
    for key, rewrite in _REWRITES.items():
        if key in out:
            note = rewrite(out, where)
            notes.append(f"{key}: {note}")
    return out, notes


def _renamed(old: str, new: str) -> Callable[[dict[str, Any], Where], str]:
    """A rewrite of GPT-NeoX's older name `old` of the key `new`: both given must agree."""

    def rewrite(values: dict[str, Any], where: Where) -> str:
        value = values.pop(old)
        current = values.get(new)
        if current is not None and current != value:
            raise ConfigError(
                f"{where(old)}: {old} ({value}) and {new} ({current}) disagree; {old} is "
                f"GPT-NeoX's older name of {new}, keep one"
            )
        values[new] = value
        return f"read as {new}: {value}"

    return rewrite


def _mlp_type(values: dict[str, Any], where: Where) -> str:
    kind = values.pop("mlp_type")
    if kind == "regular":
        return "the plain MLP (the default)"
    if kind != "llama":
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type must be 'regular' or 'llama', got {kind!r}"
        )
    activation = values.get("activation", "gelu")
    if activation not in _GATED:
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama gates with activation silu, gelu or relu, got "
            f"{activation!r}; or drop mlp_type and write a gated activation (e.g. swiglu)"
        )
    if values.get("use_bias_in_mlp") is True:
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama has no MLP biases but use_bias_in_mlp is true"
        )
    hidden, inner = values.get("hidden_size"), values.get("intermediate_size")
    if not isinstance(hidden, int) or not isinstance(inner, int | None):
        raise ConfigError(
            f"{where('mlp_type')}: mlp_type llama needs hidden_size (and intermediate_size, if "
            f"given) as integers, got {hidden!r} and {inner!r}"
        )
    multiple = values.get("mlp_multiple_of") or _LLAMA_MULTIPLE
    inner = inner or round_up(int(8 * hidden / 3), multiple)
    new = {
        "activation": _GATED[activation],
        "intermediate_size": 3 * inner,
        "mlp_multiple_of": 1,
        "use_bias_in_mlp": False,
    }
    values.update(new)
    return "read as " + ", ".join(f"{k}: {str(v).lower()}" for k, v in new.items())


_REWRITES: dict[str, Callable[[dict[str, Any], Where], str]] = {
    "save_interval": _renamed("save_interval", "checkpoint_factor"),
    "label_data_paths": _renamed("label_data_paths", "train_label_data_paths"),
    "mlp_type": _mlp_type,
}


# GPT-NeoX keys accepted and ignored: switches of GPT-NeoX's own implementation with no effect
# on what is computed here, or monitoring that neox does not have yet. Reported once per run.
_FUSION = "a kernel-fusion switch of GPT-NeoX; neox picks its kernels itself"
_MONITORING = "monitoring output neox does not write yet; training is unaffected"
IGNORED_KEYS: Mapping[str, str] = {
    "scaled_upper_triang_masked_softmax_fusion": _FUSION,
    "scaled_masked_softmax_fusion": _FUSION,
    "bias_gelu_fusion": _FUSION,
    "bias_dropout_fusion": _FUSION,
    "partition_activations": "a memory layout switch of GPT-NeoX's activation checkpointing",
    "synchronize_each_layer": "a GPT-NeoX activation checkpointing switch",
    "contiguous_checkpointing": "a GPT-NeoX activation checkpointing switch",
    "distributed_backend": "neox uses NCCL on GPUs and gloo on CPUs",
    "wall_clock_breakdown": "a DeepSpeed timing printout",
    "steps_per_print": "DeepSpeed's own progress print; neox prints every log_interval",
    "zero_allow_untested_optimizer": "neox always sets it for its own optimizer",
    "num_workers": "data loader worker count; neox reads memory-mapped files directly",
    "log_grad_norm": _MONITORING + " (the global gradient norm is always logged)",
    "log_gradient_noise_scale": _MONITORING,
    "layernorm_fusion": "torch's layer_norm is one fused kernel already",
    "gas": (
        "GPT-NeoX's derived copy of gradient_accumulation_steps, which GPT-NeoX overwrites; "
        "set gradient_accumulation_steps"
    ),
    "checkpoint_validation_with_forward_pass": (
        "GPT-NeoX's after-save check of a checkpoint's logits; neox checkpoints are verified "
        "when loaded"
    ),
    "use_cpu_initialization": "where GPT-NeoX builds its weights; neox's do not depend on it",
    "attention_softmax_in_fp32": "neox's attention kernels accumulate the softmax in fp32 anyway",
    "apply_query_key_layer_scaling": (
        "GPT-NeoX's fp16 overflow guard that divides and multiplies back by the layer number; the "
        "result is the same"
    ),
    "fp16_lm_cross_entropy": "neox always computes the loss in fp32",
    "wandb_init_all_ranks": "neox logs to wandb from rank 0 only",
    "git_hash": "GPT-NeoX writes its own commit here",
}

# GPT-NeoX keys that would change what is trained, for features neox does not have yet.
UNSUPPORTED_KEYS: Mapping[str, str] = {
    "return_logits": "returning logits from text generation",
    "sparsity_config": "sparse attention",
    "iteration": "starting at a chosen iteration",
    "deepspeed_extra_args": "extra DeepSpeed config entries (neox writes the DeepSpeed config)",
    "override_lr_scheduler": (
        "taking the schedule from the config instead of the checkpoint on resume (neox resumes "
        "the checkpoint's schedule; finetune: true starts a fresh one from the config)"
    ),
    "use_checkpoint_lr_scheduler": (
        "choosing between the checkpoint's and the config's schedule on resume (neox resumes "
        "the checkpoint's)"
    ),
}
