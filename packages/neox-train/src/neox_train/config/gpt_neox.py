"""GPT-NeoX compatibility: every key GPT-NeoX defines (`GPT_NEOX_KEYS`), the ones neox accepts
and ignores (`IGNORED_KEYS`), the ones it refuses for a missing feature (`FEATURES`, by feature;
`UNSUPPORTED_KEYS`, by key; a key at GPT-NeoX's default leaves its feature off and is accepted),
values of neox's own keys that ask for such a feature (`value_features`), and other spellings
(`LEGACY_KEYS`), rewritten into the keys neox validates before anything else reads
the config, so that configs written for earlier GPT-NeoX versions load unchanged.

- `save_interval`: GPT-NeoX's earlier name of `checkpoint_factor` (a save every N steps).
- `peak_theoretical_tflops`: GPT-NeoX's name of `peak_tflops` (for MFU).
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
from dataclasses import dataclass
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
    "peak_theoretical_tflops": "GPT-NeoX's name of peak_tflops; read as peak_tflops.",
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
    "peak_theoretical_tflops": _renamed("peak_theoretical_tflops", "peak_tflops"),
    "mlp_type": _mlp_type,
}


# Every key GPT-NeoX defines, by its argument group (the NeoXArgs* dataclasses of
# megatron/neox_arguments/, and the DeepSpeed config and runner keys it passes through), with
# older spellings it still reads. Each has a status here: a home (`run_config.all_keys`), accepted
# and ignored (`IGNORED_KEYS`), refused for a missing feature (`UNSUPPORTED_KEYS`), or read under
# another name (`LEGACY_KEYS`).
GPT_NEOX_KEYS: Mapping[str, tuple[str, ...]] = {
    "parallelism": (
        "pipe_parallel_size", "model_parallel_size", "pipe_partition_method", "world_size",
        "is_pipe_parallel", "sequence_parallel", "expert_interval",
    ),
    "model": (
        "precision", "num_layers", "hidden_size", "intermediate_size", "mlp_multiple_of",
        "expansion_factor", "num_attention_heads", "num_kv_heads", "seq_length",
        "sliding_window_width", "max_position_embeddings", "norm", "layernorm_fusion",
        "rmsnorm_fusion", "use_qk_layernorm", "layernorm_epsilon", "rms_norm_epsilon",
        "scalenorm_epsilon", "pos_emb", "rpe_num_buckets", "rpe_max_distance",
        "opt_pos_emb_offset", "no_weight_tying", "attention_config", "sparsity_config",
        "num_unique_layers", "param_sharing_style", "make_vocab_size_divisible_by", "activation",
        "use_flashattn_swiglu", "scaled_upper_triang_masked_softmax_fusion",
        "scaled_masked_softmax_fusion", "bias_gelu_fusion", "bias_dropout_fusion", "rope_fusion",
        "fp16_lm_cross_entropy", "init_method_std", "apply_query_key_layer_scaling",
        "use_cpu_initialization", "attention_softmax_in_fp32", "rotary_pct", "rotary_emb_base",
        "rotary_save_freqs_buffer", "init_method", "output_layer_init_method", "gmlp_attn_dim",
        "gpt_j_residual", "gpt_j_tied", "use_bias_in_norms", "use_bias_in_attn_linear",
        "use_bias_in_mlp", "mlp_type", "soft_prompt_tuning", "mamba_selective_scan_fusion",
        "mamba_causal_conv_fusion", "mamba_inner_func_fusion", "mamba_selective_fp32_params",
        "mamba_use_bias_in_conv", "mamba_use_bias_in_linears", "output_layer_parallelism",
        "serve_model_weights", "weight_server_port", "online_dataserver_ips",
        "online_dataserver_ports", "te_columnparallel", "te_rowparallel", "te_layernorm_mlp",
        "te_mha", "te_fp8_format", "te_fp8_wgrad", "te_fp8_amax_history_len",
        "te_fp8_amax_compute_algo", "te_fp8_margin", "te_fp8_mha", "dim_att", "head_size",
        "ffn_dim",
    ),
    "optimizer": (
        "optimizer_type", "use_bnb_optimizer", "zero_stage", "zero_reduce_scatter",
        "zero_contiguous_gradients", "zero_reduce_bucket_size", "zero_allgather_bucket_size",
        "lr",
    ),
    "lr_scheduler": (
        "lr_decay_style", "lr_decay_iters", "lr_decay_fraction", "min_lr", "warmup",
        "override_lr_scheduler", "use_checkpoint_lr_scheduler",
    ),
    "logging": (
        "use_wandb", "wandb_group", "wandb_run_name", "wandb_team", "wandb_project", "wandb_host",
        "wandb_init_all_ranks", "git_hash", "log_dir", "tensorboard_dir", "use_comet",
        "comet_workspace", "comet_project", "comet_experiment_name", "comet_tags",
        "comet_others", "comet_experiment", "peak_theoretical_tflops", "log_interval",
        "log_grad_pct_zeros", "log_param_norm", "log_grad_norm", "log_optimizer_states",
        "log_gradient_noise_scale", "gradient_noise_scale_n_batches",
        "gradient_noise_scale_cpu_offload", "memory_profiling", "memory_profiling_path",
        "profile", "profile_step_start", "profile_step_stop",
    ),
    "other": (
        "distributed_backend", "local_rank", "rank", "lazy_mpu_init", "short_seq_prob",
        "eod_mask_loss", "adlr_autoresume", "adlr_autoresume_interval", "seed", "onnx_safe",
        "deepscale", "deepscale_config", "deepspeed_mpi", "deepspeed_slurm", "user_script",
        "iteration", "do_train", "do_valid", "do_test", "save_iters", "global_num_gpus",
    ),
    "tokenizer": ("tokenizer_type", "padded_vocab_size"),
    "training": (
        "data_path", "use_shared_fs", "train_data_paths", "train_label_data_paths",
        "train_reward_data_paths", "test_data_paths", "test_label_data_paths",
        "test_reward_data_paths", "valid_data_paths", "valid_label_data_paths",
        "valid_reward_data_paths", "pos_train_data_paths", "neg_train_data_paths",
        "pos_train_label_data_paths", "neg_train_label_data_paths", "pos_valid_data_paths",
        "neg_valid_data_paths", "pos_valid_label_data_paths", "neg_valid_label_data_paths",
        "pos_test_data_paths", "neg_test_data_paths", "pos_test_label_data_paths",
        "neg_test_label_data_paths", "train_data_weights", "valid_data_weights",
        "test_data_weights", "weight_by_num_documents", "weighted_sampler_alpha", "data_impl",
        "pack_impl", "dataset_impl", "train_impl", "dpo_fp32", "dpo_reference_free", "dpo_beta",
        "kto_fp32", "kto_desirable_weight", "kto_undesirable_weight", "z_loss", "kto_beta",
        "fp32_reinforce", "kl_impl", "kl_div_beta", "reinforce_leave_one_out", "allow_chopped",
        "mmap_warmup", "save", "s3_path", "s3_chunk_size", "config_files", "load",
        "checkpoint_validation_with_forward_pass", "checkpoint_scale", "checkpoint_factor",
        "extra_save_iters", "no_save_optim", "no_save_rng", "no_load_optim", "no_load_rng",
        "finetune", "batch_size", "train_iters", "train_epochs", "eval_iters",
        "keep_last_n_checkpoints", "eval_interval", "split", "vocab_file", "merge_file",
        "num_workers", "exit_interval", "attention_dropout", "hidden_dropout", "weight_decay",
        "checkpoint_activations", "checkpoint_num_layers", "deepspeed_activation_checkpointing",
        "contiguous_checkpointing", "checkpoint_in_cpu", "synchronize_each_layer",
        "profile_backward", "partition_activations", "gas", "clip_grad", "hysteresis",
        "dynamic_loss_scale", "loss_scale", "loss_scale_window", "min_scale", "char_level_ppl",
        "use_mup", "coord_check", "save_base_shapes", "base_shapes_file", "mup_init_scale",
        "mup_attn_temp", "mup_output_temp", "mup_embedding_mult", "mup_rp_embedding_mult",
        "mup_width_scale", "mup_width_multiplier", "mup_d_model_base", "save_interval",
        "label_data_paths",
    ),
    "text_generation": (
        "text_gen_type", "precompute_model_name", "temperature", "top_p", "top_k",
        "return_logits", "maximum_tokens", "prompt_end", "sample_input_file",
        "sample_output_file", "num_samples", "recompute", "eval_results_prefix", "eval_tasks",
    ),
    "moe": (
        "moe_num_experts", "moe_top_k", "moe_router_type", "moe_expert_interval",
        "moe_lbl_in_fp32", "moe_jitter_eps", "moe_loss_coeff", "moe_train_capacity_factor",
        "moe_eval_capacity_factor", "moe_min_capacity", "moe_token_dropping",
        "create_moe_param_group", "moe_use_residual", "moe_expert_parallel_size", "moe_type",
        "moe_glu", "enable_expert_tensor_parallelism", "use_tutel",
    ),
    "deepspeed_config": (
        "deepspeed", "train_batch_size", "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps", "optimizer", "scheduler", "fp32_allreduce",
        "prescale_gradients", "gradient_predivide_factor", "sparse_gradients", "fp16", "bf16",
        "amp", "gradient_clipping", "zero_optimization", "zero_allow_untested_optimizer",
        "curriculum_learning", "curriculum_seqlen", "steps_per_print", "wall_clock_breakdown",
        "dump_state", "flops_profiler", "communication_data_type", "autotuning",
        "activation_checkpointing", "sparse_attention", "data_efficiency", "tensorboard",
        "wandb", "csv_monitor", "elasticity", "comms_logger", "compression_training",
        "checkpoint", "data_types", "deepspeed_extra_args",
    ),
    "deepspeed_runner": (
        "hostfile", "include", "exclude", "num_nodes", "num_gpus", "master_port", "master_addr",
        "launcher", "force_multi", "detect_nvlink_pairs", "autotuning_run", "no_ssh_check",
        "comment", "account",
    ),
}  # fmt: skip


# GPT-NeoX keys accepted and ignored: switches of GPT-NeoX's own implementation with no effect
# on what is computed here, monitoring that neox does not have yet, and the values GPT-NeoX
# derives or sets while it runs (its checkpoints store them). Reported once per run.
_FUSION = "a kernel-fusion switch of GPT-NeoX; neox picks its kernels itself"
_MONITORING = "monitoring output neox does not write yet; training is unaffected"
_RUNTIME = "a value GPT-NeoX sets while it runs (stored in its checkpoints' configs)"
_CHECKPOINTING = "a GPT-NeoX activation checkpointing switch"


def _derived(source: str) -> str:
    return f"GPT-NeoX's derived copy of {source}, which GPT-NeoX overwrites; set {source}"


IGNORED_KEYS: Mapping[str, str] = {
    "scaled_upper_triang_masked_softmax_fusion": _FUSION,
    "scaled_masked_softmax_fusion": _FUSION,
    "bias_gelu_fusion": _FUSION,
    "bias_dropout_fusion": _FUSION,
    "use_flashattn_swiglu": _FUSION,
    "partition_activations": "a memory layout switch of GPT-NeoX's activation checkpointing",
    "synchronize_each_layer": _CHECKPOINTING,
    "contiguous_checkpointing": _CHECKPOINTING,
    "profile_backward": _CHECKPOINTING,
    "deepspeed_activation_checkpointing": _CHECKPOINTING + " (deprecated in GPT-NeoX)",
    "activation_checkpointing": (
        "the DeepSpeed block GPT-NeoX builds from checkpoint_activations; neox checkpoints "
        "activations with checkpoint_activations and checkpoint_num_layers"
    ),
    "distributed_backend": "neox uses NCCL on GPUs and gloo on CPUs",
    "wall_clock_breakdown": "a DeepSpeed timing printout",
    "steps_per_print": "DeepSpeed's own progress print; neox prints every log_interval",
    "dump_state": "a DeepSpeed printout of its state at start",
    "zero_allow_untested_optimizer": "neox always sets it for its own optimizer",
    "num_workers": "data loader worker count; neox reads memory-mapped files directly",
    "mmap_warmup": "GPT-NeoX's read-ahead of the token files; neox maps them on demand",
    "use_shared_fs": "where GPT-NeoX builds its index files; neox's rank 0 builds them once",
    "log_grad_norm": _MONITORING + " (the global gradient norm is always logged)",
    "log_gradient_noise_scale": _MONITORING,
    "gradient_noise_scale_n_batches": _MONITORING,
    "gradient_noise_scale_cpu_offload": _MONITORING,
    "log_grad_pct_zeros": _MONITORING,
    "layernorm_fusion": "torch's layer_norm is one fused kernel already",
    "gas": _derived("gradient_accumulation_steps"),
    "batch_size": _derived("train_micro_batch_size_per_gpu"),
    "clip_grad": _derived("gradient_clipping"),
    "lr": _derived("optimizer.params.lr"),
    "optimizer_type": _derived("optimizer.type"),
    "zero_stage": _derived("zero_optimization.stage"),
    "zero_reduce_scatter": _derived("zero_optimization.reduce_scatter"),
    "zero_contiguous_gradients": _derived("zero_optimization.contiguous_gradients"),
    "zero_reduce_bucket_size": _derived("zero_optimization.reduce_bucket_size"),
    "zero_allgather_bucket_size": _derived("zero_optimization.allgather_bucket_size"),
    "hysteresis": _derived("fp16.hysteresis"),
    "loss_scale": _derived("fp16.loss_scale"),
    "loss_scale_window": _derived("fp16.loss_scale_window"),
    "min_scale": _derived("fp16.min_loss_scale"),
    "dynamic_loss_scale": _derived("fp16.loss_scale (0: dynamic)"),
    "is_pipe_parallel": _derived("pipe_parallel_size"),
    "padded_vocab_size": "GPT-NeoX's padded vocabulary; neox pads the tokenizer's vocabulary "
    "to make_vocab_size_divisible_by x model_parallel_size itself",
    "world_size": _RUNTIME + "; global_num_gpus is checked against the run's world size",
    "local_rank": _RUNTIME,
    "rank": _RUNTIME,
    "user_script": _RUNTIME,
    "do_train": _RUNTIME,
    "do_valid": _RUNTIME,
    "do_test": _RUNTIME,
    "save_iters": _RUNTIME + " (the steps to save at, from checkpoint_factor)",
    "curriculum_seqlen": _RUNTIME + " (the curriculum's current sequence length)",
    "config_files": "GPT-NeoX's copy of the config files it read; neox writes config.yml",
    "comet_experiment": _RUNTIME + " (the Comet experiment object)",
    "checkpoint_validation_with_forward_pass": (
        "GPT-NeoX's after-save check of a checkpoint's logits; neox checkpoints are verified "
        "when loaded"
    ),
    "use_cpu_initialization": "where GPT-NeoX builds its weights; neox's do not depend on it",
    "lazy_mpu_init": "GPT-NeoX's deferred start of its process groups for external managers",
    "onnx_safe": "a GPT-NeoX workaround for the torch ONNX exporter",
    "deepscale": "a deprecated DeepSpeed switch, always on in GPT-NeoX",
    "deepscale_config": "a deprecated DeepSpeed config file path; neox writes the config",
    "deepspeed": "GPT-NeoX's DeepSpeed switch, always true; neox always trains with DeepSpeed",
    "short_seq_prob": "Megatron's short-sample probability, unused by GPT-NeoX's GPT data",
    "attention_softmax_in_fp32": "neox's attention kernels accumulate the softmax in fp32 anyway",
    "apply_query_key_layer_scaling": (
        "GPT-NeoX's fp16 overflow guard that divides and multiplies back by the layer number; the "
        "result is the same"
    ),
    "fp16_lm_cross_entropy": "neox always computes the loss in fp32",
    "wandb_init_all_ranks": "neox logs to wandb from rank 0 only",
    "git_hash": "GPT-NeoX writes its own commit here",
    "no_save_rng": (
        "neox's randomness is a function of (seed, step, rank): there is no RNG state to save"
    ),
    "eval_results_prefix": "the file name prefix of GPT-NeoX's evaluate.py; neox eval names "
    "its own output",
    "force_multi": "DeepSpeed's launcher switch for one remote node; neox launch decides",
    "detect_nvlink_pairs": "DeeperSpeed's reordering of GPUs into NVLink pairs",
    "create_moe_param_group": "GPT-NeoX's separate optimizer group for DeepSpeed MoE's experts",
    "enable_expert_tensor_parallelism": (
        "a DeepSpeed MoE switch; neox's dropless MoE, as GPT-NeoX's, always splits the experts "
        "over the tensor-parallel ranks"
    ),
}


@dataclass(frozen=True)
class Feature:
    """A GPT-NeoX feature neox does not have yet: its keys, each with GPT-NeoX's default, which
    leaves the feature off (a key at its default is accepted and ignored; where the default is
    null, so is any empty value: false, 0, [], {})."""

    name: str
    keys: Mapping[str, Any]


_MUP = {
    "use_mup": False, "coord_check": False, "save_base_shapes": False, "base_shapes_file": None,
    "mup_init_scale": 1.0, "mup_attn_temp": 1.0, "mup_output_temp": 1.0,
    "mup_embedding_mult": 1.0, "mup_rp_embedding_mult": 1.0, "mup_width_scale": 2,
    "mup_width_multiplier": None, "mup_d_model_base": 256,
}  # fmt: skip
_REINFORCE = {
    "fp32_reinforce": True, "kl_impl": "mse", "kl_div_beta": 0.1,
    "reinforce_leave_one_out": False,
}  # fmt: skip
# GPT-NeoX's DeepSpeed MoE (moe_type deepspeed: capacity factors, dropped tokens, residual
# MoE, tutel); the dropless layer's own keys (moe_num_experts, moe_top_k, ...) are
# ModelConfig's, moe_expert_parallel_size the parallel section's
_MOE = {
    "moe_train_capacity_factor": 1.0, "moe_eval_capacity_factor": 1.0, "moe_min_capacity": 4,
    "moe_token_dropping": False, "moe_use_residual": True, "moe_type": "megablocks",
    "moe_glu": False, "use_tutel": False, "expert_interval": 2,
}  # fmt: skip
_TRANSFORMER_ENGINE = {
    "te_columnparallel": False, "te_rowparallel": False, "te_layernorm_mlp": False,
    "te_mha": False, "te_fp8_format": "hybrid", "te_fp8_wgrad": True,
    "te_fp8_amax_history_len": 1, "te_fp8_amax_compute_algo": "most_recent", "te_fp8_margin": 0,
    "te_fp8_mha": False,
}  # fmt: skip
_MAMBA = {
    "mamba_selective_scan_fusion": False, "mamba_causal_conv_fusion": False,
    "mamba_inner_func_fusion": False, "mamba_selective_fp32_params": True,
    "mamba_use_bias_in_conv": True, "mamba_use_bias_in_linears": False,
}  # fmt: skip
_DEEPSPEED_BLOCK = " (deepspeed_extra_args passes such a block to DeepSpeed as it is)"

FEATURES: tuple[Feature, ...] = (
    Feature("DeepSpeed's token-dropping MoE (moe_type deepspeed)", _MOE),
    Feature("Mamba layers", _MAMBA),
    Feature("RWKV layers", {"dim_att": None, "head_size": None, "ffn_dim": None}),
    Feature("Transformer Engine layers and fp8", _TRANSFORMER_ENGINE),
    Feature("gMLP blocks", {"gmlp_attn_dim": 64}),
    Feature("sparse attention", {"sparsity_config": None, "sparse_attention": None}),
    Feature("muP (maximal update parametrization)", _MUP),
    Feature("REINFORCE training", _REINFORCE),
    Feature("T5-style relative position buckets (pos_emb rpe)",
            {"rpe_num_buckets": 32, "rpe_max_distance": 128}),
    Feature("OPT's learned position offset", {"opt_pos_emb_offset": 0}),
    Feature("the MLP width as a multiple of hidden_size (give intermediate_size instead)",
            {"expansion_factor": None}),
    Feature("layers sharing weights",
            {"num_unique_layers": None, "param_sharing_style": "grouped"}),
    Feature("soft prompt tuning", {"soft_prompt_tuning": None}),
    Feature("serving weights and data over sockets (online training)", {
        "serve_model_weights": False, "weight_server_port": 6000,
        "online_dataserver_ips": "localhost", "online_dataserver_ports": 10000,
    }),
    Feature("returning logits from text generation", {"return_logits": False}),
    Feature("precomputing log-probabilities (text_gen_type precompute)",
            {"precompute_model_name": None}),
    Feature("starting at a chosen iteration", {"iteration": None}),
    Feature("training for a number of epochs", {"train_epochs": None}),
    Feature("decaying the learning rate over a fraction of training", {"lr_decay_fraction": None}),
    Feature("naming the W&B run", {"wandb_run_name": None}),
    Feature("checkpoints without the optimizer state", {"no_save_optim": False}),
    Feature("activation checkpoints kept in CPU memory", {"checkpoint_in_cpu": False}),
    Feature("character-level perplexity", {"char_level_ppl": False}),
    Feature("NVIDIA ADLR cluster auto-resume",
            {"adlr_autoresume": False, "adlr_autoresume_interval": 1000}),
    Feature("DeepSpeed's learning-rate schedulers (neox schedules it from lr_decay_style)",
            {"scheduler": None}),
    Feature("gradient prescaling before the all-reduce",
            {"prescale_gradients": False, "gradient_predivide_factor": 1.0}),
    Feature("sparse embedding gradients", {"sparse_gradients": False}),
    Feature("NVIDIA Apex AMP", {"amp": None}),
    Feature("DeepSpeed autotuning", {"autotuning": None, "autotuning_run": None}),
    Feature("DeepSpeed data efficiency", {"data_efficiency": None}),
    Feature("DeepSpeed elastic training", {"elasticity": None}),
    Feature("DeepSpeed compression training", {"compression_training": None}),
    Feature("DeepSpeed's checkpoint options" + _DEEPSPEED_BLOCK, {"checkpoint": None}),
    Feature("DeepSpeed's own monitors" + _DEEPSPEED_BLOCK, {
        "flops_profiler": None, "comms_logger": None, "tensorboard": None, "wandb": None,
        "csv_monitor": None,
    }),
)  # fmt: skip

# GPT-NeoX keys that would change what is trained, for features neox does not have yet.
UNSUPPORTED_KEYS: Mapping[str, str] = {
    key: feature.name for feature in FEATURES for key in feature.keys
}
_OFF: Mapping[str, Any] = {
    key: default for feature in FEATURES for key, default in feature.keys.items()
}


def refused_value(key: str, value: Any) -> str | None:
    """The feature a refused GPT-NeoX key asks for with `value`; None at GPT-NeoX's default
    (the feature off)."""
    default = _OFF[key]
    if default is None and not value:
        return None
    if value == default and isinstance(value, bool) == isinstance(default, bool):
        return None
    return UNSUPPORTED_KEYS[key]


_INITS = {
    "orthogonal": "orthogonal initialisation",
    "scaled_orthogonal": "orthogonal initialisation",
    "single_residual_scaled_normal": "Mamba's initialisation (single_residual_scaled_normal)",
}
# Values of keys neox has that ask for a GPT-NeoX feature it does not have.
_VALUE_FEATURES: Mapping[str, Mapping[Any, str]] = {
    "pos_emb": {"rpe": "T5-style relative position buckets"},
    "norm": {
        "te_rmsnorm": "Transformer Engine layers and fp8",
        "te_layernorm": "Transformer Engine layers and fp8",
        "non_parametric_layernorm": "layer norm without weights",
    },
    "lr_decay_style": {"exponential": "the exponential learning-rate decay"},
    "text_gen_type": {"precompute": "precomputing log-probabilities"},
    "data_impl": {"cached": "GPT-NeoX's cached (non-mmap) token files"},
    **dict.fromkeys(("init_method", "output_layer_init_method"), _INITS),
}
_ATTENTION_FEATURES = {
    "local": "GPT-NeoX's local attention (neox's windowed attention is sliding_window_width)",
    **dict.fromkeys(
        ("sparse_fixed", "sparse_variable", "bigbird", "bslongformer"), "sparse attention"
    ),
    **dict.fromkeys(("gmlp", "amlp"), "gMLP blocks"),
    "mamba": "Mamba layers",
    "rwkv": "RWKV layers",
}
_OPTIMIZERS = {
    "onebitadam": "DeepSpeed's 1-bit Adam",
    "onebitlamb": "DeepSpeed's 1-bit LAMB",
    "lamb": "the LAMB optimizer",
    "sm3": "the SM3 optimizer",
    "madgrad_wd": "the MADGRAD optimizer",
    "adafactor": "the Adafactor optimizer",
}


def value_features(key: str, value: Any) -> list[str]:
    """The GPT-NeoX features `value` of `key` (a key neox has) asks for, which neox does not
    have yet: an attention type of attention_config, an optimizer type, a pos_emb, ..."""
    if key == "attention_config" and isinstance(value, list):
        named = {
            kind
            for entry in value
            if isinstance(entry, list | tuple) and entry and isinstance(entry[0], list | tuple)
            for kind in entry[0]
        }
        found = {_ATTENTION_FEATURES[k] for k in named if k in _ATTENTION_FEATURES}
        return sorted(found)
    if key == "optimizer" and isinstance(value, Mapping):
        kind = str(value.get("type", "")).lower()
        return [_OPTIMIZERS[kind]] if kind in _OPTIMIZERS else []
    table = _VALUE_FEATURES.get(key, {})
    return [table[value]] if isinstance(value, str) and value in table else []
