"""The run config: GPT-NeoX YAML files validated once into typed, frozen sections.

Every key has exactly one home (a field of one section below, or of `neox_model.ModelConfig`).
GPT-NeoX keys that only tune GPT-NeoX's own implementation are accepted and reported once
(`IGNORED_KEYS`); GPT-NeoX keys for features neox does not have yet are refused with the reason
(`UNSUPPORTED_KEYS`); older GPT-NeoX spellings are rewritten into today's keys first
(`legacy_keys`); anything else unknown is an error naming the closest valid key.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from neox_data import PackImpl
from neox_model import ModelConfig
from neox_train.batch import BatchLayout, data_parallel_size, resolve_batch
from neox_train.legacy_keys import LEGACY_KEYS, rewrite_legacy_keys
from neox_train.schema import ConfigError, build, closest, field_names
from neox_train.yaml_files import Override, merge_files


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


TokenizerType = Literal[
    "GPT2BPETokenizer",
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
    "TiktokenTokenizer",
]


@dataclass(frozen=True)
class DataConfig:
    data_path: str | None = field(
        default=None, metadata=_doc("Token file prefix (PREFIX.bin/.idx) split by `split`.")
    )
    split: str = field(default="969, 30, 1", metadata=_doc("Train, valid, test weights."))
    tokenizer_type: TokenizerType = field(
        default="GPT2BPETokenizer", metadata=_doc("Tokenizer class (GPT-NeoX names).")
    )
    vocab_file: str | None = field(default=None, metadata=_doc("Tokenizer file."))
    merge_file: str | None = field(default=None, metadata=_doc("BPE merges (GPT-2 tokenizers)."))
    data_impl: Literal["mmap"] = field(default="mmap", metadata=_doc("Token file format."))
    train_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "Token file prefixes to train on, whole, blended by train_data_weights (instead of "
            "data_path and split)."
        ),
    )
    valid_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Token file prefixes to validate on (with train_data_paths).")
    )
    test_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Token file prefixes to test on (with train_data_paths).")
    )
    train_data_weights: tuple[float, ...] | None = field(
        default=None, metadata=_doc("Blend weights of train_data_paths; default equal.")
    )
    valid_data_weights: tuple[float, ...] | None = field(
        default=None, metadata=_doc("Blend weights of valid_data_paths; default equal.")
    )
    test_data_weights: tuple[float, ...] | None = field(
        default=None, metadata=_doc("Blend weights of test_data_paths; default equal.")
    )
    weight_by_num_documents: bool = field(
        default=False,
        metadata=_doc(
            "Blend weights from each file's number of documents (weighted_sampler_alpha) "
            "instead of the *_data_weights."
        ),
    )
    weighted_sampler_alpha: float = field(
        default=1.0,
        metadata=_doc(
            "Alpha of weight_by_num_documents: 1 samples in proportion to documents; toward 0 "
            "every file alike (small files boosted)."
        ),
    )
    train_label_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "Label token files, one per train_data_paths file and with its document sizes: the "
            "token to predict at each position, -100 for no loss (signed, e.g. int32); default: "
            "every next token."
        ),
    )
    valid_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label token files, one per valid_data_paths file.")
    )
    test_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label token files, one per test_data_paths file.")
    )
    pack_impl: PackImpl = field(
        default="packed",
        metadata=_doc(
            "How documents become samples: packed (one stream cut every seq_length tokens), "
            "pack_until_overflow (whole documents while they fit), unpacked (one document per "
            "sample); the last two pad samples, without loss on the padding."
        ),
    )
    allow_chopped: bool = field(
        default=True,
        metadata=_doc(
            "pack_until_overflow and unpacked: cut a document longer than seq_length + 1 "
            "tokens to that length; false leaves it out."
        ),
    )
    eod_mask_loss: bool = field(
        default=False,
        metadata=_doc(
            "No loss where the input token is the tokenizer's end-of-document (predicting the "
            "token after it)."
        ),
    )

    def __post_init__(self) -> None:
        if self.train_data_paths and self.data_path:
            raise ValueError(
                "set data_path (one token file, divided by split) or train_data_paths (files "
                "per purpose), not both"
            )
        if (self.valid_data_paths or self.test_data_paths) and not self.train_data_paths:
            raise ValueError("valid_data_paths and test_data_paths need train_data_paths")
        for kind in ("train", "valid", "test"):
            paths = getattr(self, f"{kind}_data_paths") or ()
            self._check_labels(kind, paths)
            weights = getattr(self, f"{kind}_data_weights")
            if weights is not None and len(weights) != len(paths):
                raise ValueError(
                    f"{kind}_data_weights has {len(weights)} weights for {len(paths)} "
                    f"{kind}_data_paths"
                )
            if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
                raise ValueError(f"{kind}_data_weights must be >= 0 and not all 0: {weights}")
        if self.weighted_sampler_alpha <= 0:
            raise ValueError(
                f"weighted_sampler_alpha must be positive: {self.weighted_sampler_alpha}"
            )

    def _check_labels(self, kind: str, paths: tuple[str, ...]) -> None:
        labels = getattr(self, f"{kind}_label_data_paths")
        if labels is None:
            return
        if not self.train_data_paths:
            raise ValueError(
                f"{kind}_label_data_paths needs train_data_paths: label files go with files "
                "per purpose (as in GPT-NeoX), not with data_path and split"
            )
        if len(labels) != len(paths):
            raise ValueError(
                f"{kind}_label_data_paths has {len(labels)} files for {len(paths)} "
                f"{kind}_data_paths: give one label file per data file, in the same order"
            )


@dataclass(frozen=True)
class OptimizerParams:
    lr: float = field(metadata=_doc("Peak learning rate."))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_doc("Adam / Lion betas."))
    eps: float = field(default=1e-8, metadata=_doc("Adam epsilon."))
    momentum: float = field(default=0.0, metadata=_doc("SGD momentum."))


OptimizerType = Literal[
    "Adam", "AdamW", "adam", "adamw", "SGD", "sgd", "Lion", "lion", "cpu_adam", "cpu_torch_adam"
]


@dataclass(frozen=True)
class OptimizerSpec:
    type: OptimizerType = field(
        metadata=_doc(
            "adam/adamw: Adam with decoupled weight decay (as GPT-NeoX's fused Adam; torch's "
            "fused kernel on GPUs); sgd; lion (Chen et al., 2023); cpu_adam: DeepSpeed's CPU "
            "Adam, for zero_optimization.offload_optimizer; cpu_torch_adam: torch's AdamW."
        )
    )
    params: OptimizerParams = field(metadata=_doc("Optimizer hyper-parameters."))

    @property
    def kind(self) -> str:
        """The type, lowercase, with the aliases merged."""
        kind = self.type.lower()
        return {"adamw": "adam", "cpu_torch_adam": "adam"}.get(kind, kind)


@dataclass(frozen=True)
class OptimizerConfig:
    optimizer: OptimizerSpec = field(metadata=_doc("{type, params: {lr, betas, eps}}."))
    weight_decay: float = field(
        default=0.01, metadata=_doc("Decoupled weight decay; never applied to biases or norms.")
    )
    gradient_clipping: float = field(
        default=1.0, metadata=_doc("Clip the global gradient norm to this; 0 disables.")
    )
    lr_decay_style: Literal["constant", "linear", "cosine", "inverse_sqrt"] = field(
        default="linear", metadata=_doc("Shape of the decay after warmup.")
    )
    lr_decay_iters: int | None = field(
        default=None, metadata=_doc("Steps over which to decay; default train_iters.")
    )
    min_lr: float = field(default=0.0, metadata=_doc("Learning rate floor."))
    warmup: float = field(
        default=0.01,
        metadata=_doc("Warmup: a fraction of lr_decay_iters when <= 1, else a number of steps."),
    )

    def __post_init__(self) -> None:
        if self.warmup < 0 or (self.warmup > 1 and not self.warmup.is_integer()):
            raise ValueError(
                f"warmup is a fraction of lr_decay_iters in [0, 1] or a whole number of steps, "
                f"got {self.warmup}"
            )
        if self.min_lr > self.optimizer.params.lr:
            raise ValueError(f"min_lr ({self.min_lr}) > lr ({self.optimizer.params.lr})")
        if self.gradient_clipping < 0:
            raise ValueError(f"gradient_clipping must be >= 0, got {self.gradient_clipping}")


@dataclass(frozen=True)
class CurriculumConfig:
    """GPT-NeoX / DeepSpeed's sequence-length curriculum (Li et al., 2022): train on the first
    `difficulty` tokens of each sample, the difficulty growing with the step."""

    enabled: bool = field(default=False, metadata=_doc("Use the curriculum."))
    curriculum_type: Literal["seqlen"] = field(default="seqlen", metadata=_doc("What grows."))
    min_difficulty: int = field(default=8, metadata=_doc("Sequence length at the start."))
    max_difficulty: int = field(default=2048, metadata=_doc("Sequence length at the end."))
    schedule_type: Literal["fixed_linear", "fixed_root", "fixed_discrete"] = field(
        default="fixed_linear", metadata=_doc("How the length grows (DeepSpeed's schedules).")
    )
    schedule_config: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "total_curriculum_step, difficulty_step, root_degree (fixed_root); or "
            "difficulty and max_step lists (fixed_discrete)."
        ),
    )


@dataclass(frozen=True)
class TrainingConfig:
    train_iters: int = field(metadata=_doc("Optimizer steps to train."))
    train_batch_size: int | None = field(
        default=None, metadata=_doc("Global batch: samples per step over all ranks.")
    )
    train_micro_batch_size_per_gpu: int | None = field(
        default=None, metadata=_doc("Samples per forward pass on one rank.")
    )
    gradient_accumulation_steps: int | None = field(
        default=None, metadata=_doc("Micro batches per optimizer step.")
    )
    eval_interval: int = field(default=1000, metadata=_doc("Validate every this many steps."))
    eval_iters: int = field(default=100, metadata=_doc("Batches per validation."))
    seed: int = field(default=1234, metadata=_doc("Seed for weights, data order and dropout."))
    checkpoint_activations: bool = field(
        default=False, metadata=_doc("Recompute activations in backward to save memory.")
    )
    checkpoint_num_layers: int = field(
        default=1, metadata=_doc("Layers per activation checkpoint.")
    )
    torch_compile: bool = field(
        default=False, metadata=_doc("Compile each transformer block with torch.compile.")
    )
    eval_tasks: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "lm-eval tasks (names or task YAML paths) run at every eval_interval "
            "and at the end (extra 'eval')."
        ),
    )
    eval_tasks_limit: int | None = field(
        default=None, metadata=_doc("Documents per task at most, for eval_tasks.")
    )
    curriculum_learning: CurriculumConfig | None = field(
        default=None, metadata=_doc("Sequence-length curriculum.")
    )
    max_skipped_steps: int = field(
        default=20,
        metadata=_doc(
            "Stop when this many optimizer steps in a row were skipped for non-finite "
            "gradients (a diverged run)."
        ),
    )
    exit_interval: int | None = field(
        default=None,
        metadata=_doc("Stop (after saving, when save is set) at the first step divisible by this."),
    )

    def __post_init__(self) -> None:
        for name in ("train_iters", "eval_interval", "checkpoint_num_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.exit_interval is not None and self.exit_interval <= 0:
            raise ValueError(f"exit_interval must be positive, got {self.exit_interval}")
        if self.eval_iters < 0:
            raise ValueError(f"eval_iters must be >= 0, got {self.eval_iters}")


@dataclass(frozen=True)
class Fp16Config:
    enabled: bool = field(default=False, metadata=_doc("Train in fp16 with loss scaling."))
    fp16: bool | None = field(default=None, metadata=_doc("GPT-NeoX alias of enabled."))
    loss_scale: float = field(default=0.0, metadata=_doc("0 = dynamic loss scaling."))
    loss_scale_window: int = field(default=1000, metadata=_doc("Steps between scale raises."))
    hysteresis: int = field(default=2, metadata=_doc("Overflows tolerated before lowering."))
    min_loss_scale: float = field(default=1.0, metadata=_doc("Lowest dynamic loss scale."))
    initial_scale_power: int = field(default=16, metadata=_doc("Start at 2**this."))


@dataclass(frozen=True)
class Bf16Config:
    enabled: bool = field(default=False, metadata=_doc("Train in bfloat16."))


@dataclass(frozen=True)
class PrecisionConfig:
    precision: Literal["fp32", "fp16", "bfloat16"] | None = field(
        default=None, metadata=_doc("Training precision; default from fp16/bf16, else fp32.")
    )
    fp16: Fp16Config = field(default_factory=Fp16Config, metadata=_doc("DeepSpeed fp16 block."))
    bf16: Bf16Config = field(default_factory=Bf16Config, metadata=_doc("DeepSpeed bf16 block."))

    def __post_init__(self) -> None:
        flags = {"fp16": self.fp16.enabled or bool(self.fp16.fp16), "bfloat16": self.bf16.enabled}
        on = [name for name, enabled in flags.items() if enabled]
        if len(on) > 1:
            raise ValueError("fp16.enabled and bf16.enabled are both true; choose one")
        if self.precision is not None and on and on[0] != self.precision:
            raise ValueError(f"precision is {self.precision!r} but {on[0]} is enabled")

    @property
    def dtype(self) -> Literal["fp32", "fp16", "bf16"]:
        if self.fp16.enabled or self.fp16.fp16 or self.precision == "fp16":
            return "fp16"
        if self.bf16.enabled or self.precision == "bfloat16":
            return "bf16"
        return "fp32"


@dataclass(frozen=True)
class ZeroConfig:
    stage: int = field(default=0, metadata=_doc("ZeRO stage (0 = plain data parallel)."))
    allgather_partitions: bool = field(default=True, metadata=_doc("DeepSpeed ZeRO key."))
    allgather_bucket_size: int = field(default=500_000_000, metadata=_doc("DeepSpeed ZeRO key."))
    overlap_comm: bool = field(default=False, metadata=_doc("DeepSpeed ZeRO key."))
    reduce_scatter: bool = field(default=True, metadata=_doc("DeepSpeed ZeRO key."))
    reduce_bucket_size: int = field(default=500_000_000, metadata=_doc("DeepSpeed ZeRO key."))
    contiguous_gradients: bool = field(default=True, metadata=_doc("DeepSpeed ZeRO key."))
    cpu_offload: bool = field(
        default=False, metadata=_doc("GPT-NeoX's switch for offload_optimizer: {device: cpu}.")
    )
    offload_optimizer: dict[str, Any] | None = field(
        default=None, metadata=_doc("DeepSpeed's optimizer offload block, e.g. {device: cpu}.")
    )
    offload_param: dict[str, Any] | None = field(
        default=None, metadata=_doc("DeepSpeed's ZeRO-3 parameter offload block.")
    )

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_optimization.stage must be 0, 1, 2 or 3, got {self.stage}")
        if self.offloads_optimizer and self.stage == 0:
            raise ValueError("optimizer offload needs zero_optimization.stage 1, 2 or 3")

    @property
    def offloads_optimizer(self) -> bool:
        return self.cpu_offload or bool(self.offload_optimizer)


@dataclass(frozen=True)
class ParallelConfig:
    pipe_parallel_size: int = field(default=0, metadata=_doc("Pipeline stages (0/1 = none)."))
    model_parallel_size: int = field(default=1, metadata=_doc("Tensor-parallel size."))
    sequence_parallel: bool = field(
        default=False,
        metadata=_doc(
            "Split the sequence over the tensor-parallel ranks where the activations are "
            "otherwise replicated (norms, dropout, residual adds): their memory / "
            "model_parallel_size, reduce-scatter and all-gather instead of all-reduce "
            "(Korthikanti et al., 2022). Needs seq_length divisible by model_parallel_size; "
            "changes nothing at model_parallel_size 1."
        ),
    )
    zero_optimization: ZeroConfig = field(
        default_factory=ZeroConfig, metadata=_doc("DeepSpeed ZeRO settings.")
    )
    pipe_partition_method: str = field(
        default="type:transformer|mlp",
        metadata=_doc(
            "How layers are split over pipeline stages: 'uniform', 'parameters' "
            "or 'type:REGEX' (balance layers whose class matches)."
        ),
    )
    distributed_timeout_minutes: float = field(
        default=30.0,
        metadata=_doc(
            "How long a collective may wait for the other ranks before the run stops, naming "
            "the ranks that stopped answering."
        ),
    )

    def __post_init__(self) -> None:
        if self.pipe_parallel_size < 0 or self.model_parallel_size < 1:
            raise ValueError(
                f"pipe_parallel_size ({self.pipe_parallel_size}) must be >= 0 and "
                f"model_parallel_size ({self.model_parallel_size}) >= 1"
            )
        if self.distributed_timeout_minutes <= 0:
            raise ValueError(
                f"distributed_timeout_minutes must be positive, got "
                f"{self.distributed_timeout_minutes}"
            )

    @property
    def splits_sequence(self) -> bool:
        """Whether sequence parallelism is on: asked for, over more than one tensor rank."""
        return self.sequence_parallel and self.model_parallel_size > 1


@dataclass(frozen=True)
class CheckpointConfig:
    save: str | None = field(default=None, metadata=_doc("Directory to save checkpoints in."))
    load: str | None = field(
        default=None,
        metadata=_doc(
            "Run directory (its newest complete step), one of its global_stepN directories, or "
            "s3://bucket/prefix to resume from; saved at any layout."
        ),
    )
    s3_path: str | None = field(
        default=None,
        metadata=_doc("Also upload every checkpoint to this s3://bucket/prefix (extra 's3')."),
    )
    s3_chunk_size: int = field(
        default=104_857_600, metadata=_doc("Multipart upload part size in bytes.")
    )
    checkpoint_factor: int | None = field(
        default=None,
        metadata=_doc(
            "Save every this many steps (linear) or at its powers (log); the end is always saved."
        ),
    )
    checkpoint_scale: Literal["linear", "log"] = field(
        default="linear", metadata=_doc("Spacing of the checkpoint_factor saves.")
    )
    extra_save_iters: tuple[int, ...] | None = field(
        default=None, metadata=_doc("More steps to save at (0 = before the first step).")
    )
    keep_last_n_checkpoints: int | None = field(
        default=None, metadata=_doc("Delete older checkpoints beyond this many.")
    )
    finetune: bool = field(
        default=False,
        metadata=_doc(
            "Load only the weights from `load`; restart the step count, optimizer and schedule."
        ),
    )
    no_load_optim: bool = field(
        default=False, metadata=_doc("Resume without the optimizer state and schedule.")
    )
    overwrite_save: bool = field(
        default=False,
        metadata=_doc(
            "Start even though `save` holds steps this run would not continue (another model's, "
            "steps without `latest`, steps after the one `load` names): they are moved into "
            "SAVE/replaced_<time>/ first. Without it such a start is refused."
        ),
    )
    no_load_rng: bool = field(
        default=False,
        metadata=_doc(
            "Accepted for GPT-NeoX configs: neox's randomness is a function of "
            "(seed, step, rank), so there is no RNG state to skip."
        ),
    )

    def __post_init__(self) -> None:
        for name in ("checkpoint_factor", "keep_last_n_checkpoints"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.checkpoint_scale == "log" and self.checkpoint_factor == 1:
            raise ValueError("checkpoint_scale log needs checkpoint_factor >= 2")
        if any(step < 0 for step in self.extra_save_iters or ()):
            raise ValueError(f"extra_save_iters must be >= 0, got {self.extra_save_iters}")

    def save_steps(self, train_iters: int) -> frozenset[int]:
        """The steps after which a checkpoint is written (0 = before training)."""
        steps = {train_iters, *(self.extra_save_iters or ())}
        factor = self.checkpoint_factor
        if factor and self.checkpoint_scale == "linear":
            steps.update(range(factor, train_iters + 1, factor))
        elif factor:
            power = 1
            while power <= train_iters:
                steps.add(power)
                power *= factor
        return frozenset(s for s in steps if s <= train_iters)


@dataclass(frozen=True)
class LoggingConfig:
    log_interval: int = field(default=100, metadata=_doc("Print a progress line every N steps."))
    log_dir: str | None = field(
        default=None, metadata=_doc("Where metrics.jsonl goes; default the save directory.")
    )
    tensorboard_dir: str | None = field(
        default=None, metadata=_doc("Write TensorBoard event files here (extra 'tensorboard').")
    )
    use_wandb: bool = field(
        default=False, metadata=_doc("Log to Weights & Biases (extra 'wandb').")
    )
    wandb_project: str = field(default="neox", metadata=_doc("wandb project."))
    wandb_group: str | None = field(default=None, metadata=_doc("wandb group of runs."))
    wandb_team: str | None = field(default=None, metadata=_doc("wandb entity (team)."))
    wandb_host: str | None = field(default=None, metadata=_doc("wandb server URL."))
    log_param_norm: bool = field(
        default=False, metadata=_doc("Log the parameter norm, whole and per layer.")
    )
    peak_tflops: float | None = field(
        default=None,
        metadata=_doc("Peak TFLOP/s of one device, for MFU; default: known GPUs' data sheets."),
    )
    log_optimizer_states: bool = field(
        default=False,
        metadata=_doc("Log the norm of each optimizer state (Adam's exp_avg, exp_avg_sq, ...)."),
    )
    profile: bool = field(
        default=False,
        metadata=_doc(
            "Profile steps profile_step_start..profile_step_stop: a torch profiler trace per "
            "rank in LOG_DIR/profile/ (log_dir, else save), and on GPUs NVTX ranges and "
            "cudaProfilerStart/Stop for Nsight (nsys --capture-range=cudaProfilerApi)."
        ),
    )
    profile_step_start: int = field(default=10, metadata=_doc("First profiled step."))
    profile_step_stop: int = field(default=12, metadata=_doc("Last profiled step."))
    memory_profiling: bool = field(
        default=False,
        metadata=_doc(
            "Record memory over the profiled steps into memory_profiling_path: a torch CUDA "
            "memory snapshot per rank on GPUs (memory_rankN.pickle, for pytorch.org/memory_viz), "
            "a torch profiler trace with memory events on CPUs (memory_rankN.json)."
        ),
    )
    memory_profiling_path: str | None = field(
        default=None, metadata=_doc("Directory for memory_profiling's files.")
    )

    def __post_init__(self) -> None:
        if self.log_interval <= 0:
            raise ValueError(f"log_interval must be positive, got {self.log_interval}")
        if (self.profile or self.memory_profiling) and not (
            0 < self.profile_step_start <= self.profile_step_stop
        ):
            raise ValueError(
                f"profile_step_start ({self.profile_step_start}) must be positive and at most "
                f"profile_step_stop ({self.profile_step_stop})"
            )
        if self.memory_profiling and not self.memory_profiling_path:
            raise ValueError("memory_profiling needs memory_profiling_path (where files go)")


@dataclass(frozen=True)
class TextGenConfig:
    text_gen_type: Literal["unconditional", "input-file", "interactive"] | None = field(
        default=None, metadata=_doc("How `neox generate` samples: its three GPT-NeoX modes.")
    )
    maximum_tokens: int = field(default=64, metadata=_doc("New tokens per sample at most."))
    temperature: float = field(default=0.0, metadata=_doc("0 = greedy."))
    top_k: int = field(default=0, metadata=_doc("Sample among the k likeliest tokens; 0 = all."))
    top_p: float = field(
        default=0.0, metadata=_doc("Nucleus sampling mass; 0 (or 1) = no nucleus filter.")
    )
    num_samples: int = field(default=1, metadata=_doc("Samples per prompt (or unconditional)."))
    prompt_end: str = field(default="\n", metadata=_doc("Separator of prompts in the input file."))
    sample_input_file: str | None = field(
        default=None, metadata=_doc("Prompts for input-file mode.")
    )
    sample_output_file: str = field(
        default="samples.txt", metadata=_doc("Where samples go: one JSON object per line.")
    )
    recompute: bool = field(
        default=False, metadata=_doc("Recompute the whole context for every token (no KV cache).")
    )
    stop_tokens: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Stop a sample when its text ends with one of these.")
    )
    compile_decoding: bool = field(
        default=False,
        metadata=_doc(
            "Run each new token's step as one graph compiled by torch.compile over a static KV "
            "cache: compiled on the first step (seconds), faster per token after that. Needs "
            "the KV cache (not recompute) and one tensor-parallel rank."
        ),
    )

    def __post_init__(self) -> None:
        if self.compile_decoding and self.recompute:
            raise ValueError("compile_decoding runs over the KV cache; unset recompute")
        if self.maximum_tokens <= 0 or self.num_samples <= 0 or self.top_k < 0:
            raise ValueError(
                f"maximum_tokens ({self.maximum_tokens}) and num_samples ({self.num_samples}) "
                f"must be positive and top_k ({self.top_k}) >= 0"
            )
        if not 0.0 <= self.top_p <= 1.0 or self.temperature < 0:
            raise ValueError(
                f"top_p must be in [0, 1] and temperature >= 0, got {self.top_p}, "
                f"{self.temperature}"
            )


Launcher = Literal[
    "pdsh", "local", "openmpi", "mvapich", "mpich", "impi", "slurm", "jsrun", "torchrun"
]


@dataclass(frozen=True)
class LaunchConfig:
    num_gpus: int | None = field(
        default=None, metadata=_doc("Workers per node (GPUs; on CPU, processes). Default: all.")
    )
    num_nodes: int = field(default=-1, metadata=_doc("Nodes to use; -1 = all in the hostfile."))
    launcher: Launcher = field(default="pdsh", metadata=_doc("How to start remote workers."))
    hostfile: str | None = field(default=None, metadata=_doc("Hosts and slots; none = local."))
    master_port: int | None = field(
        default=None, metadata=_doc("Rendezvous port; default: a free port.")
    )
    deepspeed_mpi: bool = field(default=False, metadata=_doc("Ranks come from MPI."))
    deepspeed_slurm: bool = field(default=False, metadata=_doc("Ranks come from Slurm."))
    include: str = field(default="", metadata=_doc("Hosts/devices to use, e.g. 'node1:0,1@node2'."))
    exclude: str = field(
        default="", metadata=_doc("Hosts/devices to leave out, e.g. 'node3@node4:7'.")
    )
    master_addr: str | None = field(
        default=None,
        metadata=_doc("Host of rank 0; default: 127.0.0.1 on one node, else the first node."),
    )
    launcher_args: str = field(
        default="", metadata=_doc("Extra flags for the launcher program, split like a shell.")
    )
    no_ssh_check: bool = field(
        default=False, metadata=_doc("pdsh: skip the SSH check of every node before starting.")
    )
    comment: str | None = field(default=None, metadata=_doc("Slurm job comment."))
    account: str | None = field(default=None, metadata=_doc("Slurm account."))
    partition: str | None = field(default=None, metadata=_doc("Slurm partition."))
    preemption_grace_period: float = field(
        default=600.0,
        metadata=_doc(
            "Seconds the workers get, after a preemption signal, to finish their step, save and "
            "exit 75, before the launcher kills them (a step plus a save; Slurm: leave this "
            "much between `sbatch --signal=USR1@SECONDS` and the end of the job)."
        ),
    )
    preemption_signals: tuple[str, ...] = field(
        default=("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"),
        metadata=_doc(
            "Signals that mean preempt, sent to `neox train`, `neox launch` or any worker: "
            "every rank finishes its step, the run saves, and every process exits 75. A second "
            "signal to the launcher, a second or more later, kills the workers at once."
        ),
    )

    def __post_init__(self) -> None:
        if self.num_gpus is not None and self.num_gpus <= 0:
            raise ValueError(f"num_gpus must be positive, got {self.num_gpus}")
        if self.num_nodes == 0 or self.num_nodes < -1:
            raise ValueError(f"num_nodes must be positive or -1, got {self.num_nodes}")
        if not 0 <= self.preemption_grace_period < float("inf"):
            raise ValueError(
                f"preemption_grace_period must be seconds >= 0, got {self.preemption_grace_period}"
            )
        for name in self.preemption_signals:
            _signal(name)

    @property
    def signals(self) -> tuple[signal.Signals, ...]:
        """The preemption signals, from their names."""
        return tuple(map(_signal, self.preemption_signals))


def _signal(name: str) -> signal.Signals:
    signum = signal.Signals.__members__.get(name)
    if signum is None or signum in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(
            f"preemption_signals: {name!r} is not a signal a process can catch; use names "
            "such as SIGTERM, SIGINT, SIGUSR1, SIGUSR2"
        )
    return signum


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

_MODEL_KEYS = tuple(name for name in field_names(ModelConfig) if name != "vocab_size")


@dataclass(frozen=True)
class RunConfig:
    """A validated run: every section typed and frozen."""

    model: ModelConfig  # vocab_size is None until the tokenizer is known
    data: DataConfig
    optimizer: OptimizerConfig
    training: TrainingConfig
    precision: PrecisionConfig
    parallel: ParallelConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    launch: LaunchConfig
    text_generation: TextGenConfig

    def batch(self, world_size: int) -> BatchLayout:
        """The batch layout for `world_size` ranks (raises ConfigError when impossible)."""
        parallel, training = self.parallel, self.training
        dp = data_parallel_size(
            world_size, parallel.pipe_parallel_size, parallel.model_parallel_size
        )
        return resolve_batch(
            dp,
            training.train_batch_size,
            training.train_micro_batch_size_per_gpu,
            training.gradient_accumulation_steps,
        )

    @property
    def lr_decay_iters(self) -> int:
        return self.optimizer.lr_decay_iters or self.training.train_iters

    @property
    def warmup_iters(self) -> int:
        warmup = self.optimizer.warmup
        return int(warmup) if warmup > 1 else int(warmup * self.lr_decay_iters)

    def to_yaml_dict(self) -> dict[str, Any]:
        """Every key with its value, flat as in a GPT-NeoX YAML; loads back to this config."""
        flat: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            values.pop("vocab_size", None)
            flat.update(values)
        return _plain(flat)


_SECTIONS: tuple[tuple[str, type], ...] = (
    ("data", DataConfig),
    ("optimizer", OptimizerConfig),
    ("training", TrainingConfig),
    ("precision", PrecisionConfig),
    ("parallel", ParallelConfig),
    ("checkpoint", CheckpointConfig),
    ("logging", LoggingConfig),
    ("launch", LaunchConfig),
    ("text_generation", TextGenConfig),
)


@dataclass(frozen=True)
class LoadedConfig:
    run: RunConfig
    files: tuple[str, ...]
    overrides: tuple[Override, ...]  # values replaced by a later file
    ignored: tuple[str, ...]  # "key: reason" lines for accepted-but-ignored GPT-NeoX keys
    rewritten: tuple[str, ...] = ()  # "key: read as ..." lines for older GPT-NeoX spellings


def config_sections() -> tuple[tuple[str, type], ...]:
    """(name, class) of every section a run config's keys belong to, the model first."""
    return (("model", ModelConfig), *_SECTIONS)


def model_keys() -> tuple[str, ...]:
    """The ModelConfig fields a config file sets (vocab_size comes from the tokenizer)."""
    return _MODEL_KEYS


def all_keys() -> dict[str, type]:
    """Every accepted top-level key and the section class that owns it."""
    owners: dict[str, type] = dict.fromkeys(_MODEL_KEYS, ModelConfig)
    for _, cls in _SECTIONS:
        for name in field_names(cls):
            assert name not in owners, f"config key {name} has two homes"
            owners[name] = cls
    return owners


def load_run_config(paths: Sequence[str | Path]) -> LoadedConfig:
    """Merge, validate and type the config files (raises ConfigError on any problem)."""
    merged = merge_files(paths)
    files = tuple(str(p) for p in paths)

    def where(key: str) -> str:
        return merged.origins.get(key.split(".")[0], ", ".join(files))

    owners = all_keys()
    ignored = []
    split: dict[type, dict[str, Any]] = {}
    values, rewritten = rewrite_legacy_keys(merged.values, where)
    for key, value in values.items():
        if key in IGNORED_KEYS:
            ignored.append(f"{key}: {IGNORED_KEYS[key]}")
        elif key in UNSUPPORTED_KEYS:
            raise ConfigError(
                f"{where(key)}: {key} is a GPT-NeoX key for {UNSUPPORTED_KEYS[key]}, which neox "
                "does not support yet; remove it"
            )
        elif key in owners:
            split.setdefault(owners[key], {})[key] = value
        else:
            raise ConfigError(f"{where(key)}: unknown key {key!r}{_suggestion(key, owners)}")
    sections: dict[str, Any] = {
        name: build(cls, split.get(cls, {}), where) for name, cls in _SECTIONS
    }
    model = build(ModelConfig, split.get(ModelConfig, {}), where)
    run = RunConfig(model=model, **sections)
    problem = layout_problem(run)
    if problem:
        raise ConfigError(f"{', '.join(files)}: {problem}")
    return LoadedConfig(run, files, merged.overrides, tuple(ignored), tuple(rewritten))


def layout_problem(run: RunConfig) -> str | None:
    """Why the parallel layout cannot train this model, or None."""
    pipe, tp = run.parallel.pipe_parallel_size, run.parallel.model_parallel_size
    stage, model = run.parallel.zero_optimization.stage, run.model
    if pipe > 1 and stage > 1:
        return (
            f"zero_optimization.stage {stage} with pipe_parallel_size {pipe}: DeepSpeed's "
            "pipeline engine supports ZeRO stages 0 and 1 only"
        )
    if pipe > 1 and not model.no_weight_tying:
        return (
            f"pipe_parallel_size {pipe} needs no_weight_tying: true (tied input and output "
            "embeddings across pipeline stages are not supported yet)"
        )
    if run.parallel.zero_optimization.offloads_optimizer and (
        run.optimizer.optimizer.kind != "cpu_adam"
    ):
        return "an offloaded optimizer needs optimizer type cpu_adam (DeepSpeed's CPU Adam)"
    curriculum = run.training.curriculum_learning
    if (
        curriculum
        and curriculum.enabled
        and not (0 < curriculum.min_difficulty <= curriculum.max_difficulty <= model.seq_length)
    ):
        return (
            f"curriculum_learning needs 0 < min_difficulty ({curriculum.min_difficulty}) <= "
            f"max_difficulty ({curriculum.max_difficulty}) <= seq_length ({model.seq_length})"
        )
    if run.training.eval_tasks and (pipe > 1 or stage == 3):
        return (
            "eval_tasks during training needs the whole model on each rank: not with "
            "pipe_parallel_size > 1 or zero_optimization.stage 3 (run neox eval on a checkpoint)"
        )
    if stage == 3 and run.logging.log_param_norm:
        return "log_param_norm with zero_optimization.stage 3 is not supported yet"
    if stage == 3 and tp > 1:
        return f"zero_optimization.stage 3 with model_parallel_size {tp} is not supported yet"
    if model.num_attention_heads % tp or model.kv_heads % tp:
        return (
            f"model_parallel_size {tp} must divide num_attention_heads "
            f"({model.num_attention_heads}) and the key/value heads ({model.kv_heads})"
        )
    return _sequence_parallel_problem(run)


def _sequence_parallel_problem(run: RunConfig) -> str | None:
    """Why sequence_parallel cannot train this run, or None."""
    tp, seq_length = run.parallel.model_parallel_size, run.model.seq_length
    if not run.parallel.splits_sequence:
        return None
    if seq_length % tp:
        return (
            f"sequence_parallel splits the sequence over the tensor-parallel ranks: seq_length "
            f"({seq_length}) must be divisible by model_parallel_size ({tp})"
        )
    if run.training.eval_tasks:
        return (
            "eval_tasks during training with sequence_parallel: lm-eval's requests have any "
            "length, the training model takes whole shards of the sequence (run neox eval on a "
            "checkpoint)"
        )
    curriculum = run.training.curriculum_learning
    if curriculum is not None and curriculum.enabled:
        odd = [n for n in _curriculum_steps(curriculum) if min(n, seq_length) % tp]
        if odd:
            return (
                f"sequence_parallel with model_parallel_size {tp} needs every curriculum_learning "
                f"sequence length to be a multiple of {tp}; {odd[0]} is not (choose "
                f"difficulty_step, max_difficulty or the difficulty list in multiples of {tp})"
            )
    return None


def _curriculum_steps(curriculum: CurriculumConfig) -> list[int]:
    """Lengths that every sequence length of the curriculum is a multiple of or equal to."""
    schedule = curriculum.schedule_config
    if curriculum.schedule_type == "fixed_discrete":
        return [int(d) for d in schedule.get("difficulty", [])]
    # DeepSpeed's linear and root schedules: multiples of difficulty_step, capped at the maximum
    return [int(schedule.get("difficulty_step", 1)), curriculum.max_difficulty]


def _suggestion(key: str, owners: Mapping[str, type]) -> str:
    hint = closest(key, [*owners, *IGNORED_KEYS, *LEGACY_KEYS])
    return f"; did you mean {hint!r}?" if hint else ""


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that YAML writes plain sequences."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
