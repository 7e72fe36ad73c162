"""The sections of the run config: one frozen dataclass per concern, each field a config key.

A field's metadata `doc` is its entry in the key reference (`neox-train keys`). Which section owns
which key, and how the sections become a `RunConfig`, is `run_config`; rules that span sections
are `rules`; GPT-NeoX's own spellings and tables are `gpt_neox`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any, Literal

from neox_data import DEFAULT_SPLIT, PackImpl, TokenizerType
from neox_model import COLLECTIVE_TIMEOUT_MINUTES


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class DataConfig:
    data_path: str | None = field(
        default=None, metadata=_doc("Token file prefix (PREFIX.bin/.idx) split by `split`.")
    )
    split: str = field(default=DEFAULT_SPLIT, metadata=_doc("Train, valid, test weights."))
    tokenizer_type: TokenizerType = field(
        default="GPT2BPETokenizer", metadata=_doc("Tokenizer class (GPT-NeoX names).")
    )
    vocab_file: str | None = field(default=None, metadata=_doc("Tokenizer file."))
    merge_file: str | None = field(default=None, metadata=_doc("BPE merges (GPT-2 tokenizers)."))
    data_impl: Literal["mmap", "infer"] = field(
        default="mmap",
        metadata=_doc("Token file format: mmap (GPT-NeoX's 'infer', its default, reads it so)."),
    )
    train_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "Token file prefixes to train on, whole, blended by train_data_weights (instead of "
            "data_path and split: data_path is then not read, as in GPT-NeoX)."
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
    train_reward_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "train_impl kto: reward files, one per train_data_paths file and with its document "
            "sizes: a float per token (> 0 desirable, < 0 undesirable; `neox data "
            "preprocess-chat --reward-key` writes them)."
        ),
    )
    valid_reward_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Reward files, one per valid_data_paths file.")
    )
    test_reward_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Reward files, one per test_data_paths file.")
    )
    dataset_impl: Literal["gpt2", "pairwise"] = field(
        default="gpt2",
        metadata=_doc(
            "gpt2: token files of documents (data_path or *_data_paths); pairwise: preference "
            "pairs, a chosen (pos_*) and a rejected (neg_*) token file per purpose, document by "
            "document (train_impl dpo and rm; make them with `neox data preprocess-chat "
            "--jsonl-keys chosen rejected`); data_path is then not read, as in GPT-NeoX."
        ),
    )
    pos_train_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc("dataset_impl pairwise: token files of the chosen sequences to train on."),
    )
    neg_train_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "dataset_impl pairwise: token files of the rejected sequences, one per "
            "pos_train_data_paths file, its documents in the same order."
        ),
    )
    pos_train_label_data_paths: tuple[str, ...] | None = field(
        default=None,
        metadata=_doc(
            "Label files of pos_train_data_paths (-100: no loss, e.g. the prompt); default: "
            "every token of the sequence counts."
        ),
    )
    neg_train_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label files of neg_train_data_paths.")
    )
    pos_valid_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("dataset_impl pairwise: chosen sequences to validate on.")
    )
    neg_valid_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("dataset_impl pairwise: rejected sequences to validate on.")
    )
    pos_valid_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label files of pos_valid_data_paths.")
    )
    neg_valid_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label files of neg_valid_data_paths.")
    )
    pos_test_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("dataset_impl pairwise: chosen sequences to test on.")
    )
    neg_test_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("dataset_impl pairwise: rejected sequences to test on.")
    )
    pos_test_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label files of pos_test_data_paths.")
    )
    neg_test_label_data_paths: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Label files of neg_test_data_paths.")
    )

    def __post_init__(self) -> None:
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
        self._check_pairwise()

    def pairwise_paths(self, kind: str) -> list[tuple[str, str, str | None, str | None]]:
        """(chosen, rejected, chosen labels, rejected labels) of each pairwise file of `kind`
        (train, valid or test)."""
        pos = getattr(self, f"pos_{kind}_data_paths") or ()
        neg = getattr(self, f"neg_{kind}_data_paths") or ()
        none: tuple[None, ...] = (None,) * len(pos)
        pos_labels = getattr(self, f"pos_{kind}_label_data_paths") or none
        neg_labels = getattr(self, f"neg_{kind}_label_data_paths") or none
        return list(zip(pos, neg, pos_labels, neg_labels, strict=True))

    def _check_pairwise(self) -> None:
        pairwise = self.dataset_impl == "pairwise"
        given = [
            f"{side}_{kind}_{what}"
            for side in ("pos", "neg")
            for kind in ("train", "valid", "test")
            for what in ("data_paths", "label_data_paths")
            if getattr(self, f"{side}_{kind}_{what}")
        ]
        if not pairwise:
            if given:
                raise ValueError(
                    f"{given[0]} is pairwise data: set dataset_impl: pairwise (with train_impl "
                    "dpo or rm)"
                )
            return
        if self.train_data_paths:
            raise ValueError(
                "dataset_impl pairwise reads pos_*_data_paths and neg_*_data_paths, not "
                "train_data_paths"
            )
        if not self.pos_train_data_paths:
            raise ValueError(
                "dataset_impl pairwise needs pos_train_data_paths and neg_train_data_paths"
            )
        for kind in ("train", "valid", "test"):
            pos = getattr(self, f"pos_{kind}_data_paths") or ()
            for key in (
                f"neg_{kind}_data_paths",
                f"pos_{kind}_label_data_paths",
                f"neg_{kind}_label_data_paths",
            ):
                paths = getattr(self, key)
                required = key == f"neg_{kind}_data_paths" and bool(pos)
                if (paths is not None or required) and len(paths or ()) != len(pos):
                    raise ValueError(
                        f"{key} has {len(paths or ())} files for {len(pos)} "
                        f"pos_{kind}_data_paths: give one per file, in the same order"
                    )
            labels = [getattr(self, f"{s}_{kind}_label_data_paths") is None for s in ("pos", "neg")]
            if labels[0] != labels[1]:
                raise ValueError(
                    f"give pos_{kind}_label_data_paths and neg_{kind}_label_data_paths together "
                    "(or neither)"
                )
            if getattr(self, f"{kind}_data_weights") is not None and pos:
                raise ValueError(
                    f"{kind}_data_weights with pairwise data: blend weights are for "
                    f"{kind}_data_paths"
                )

    def _check_labels(self, kind: str, paths: tuple[str, ...]) -> None:
        rewards = getattr(self, f"{kind}_reward_data_paths")
        if rewards is not None and len(rewards) != len(paths):
            raise ValueError(
                f"{kind}_reward_data_paths has {len(rewards)} files for {len(paths)} "
                f"{kind}_data_paths: give one reward file per data file, in the same order"
            )
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
    use_bnb_optimizer: bool = field(
        default=False,
        metadata=_doc(
            "Adam as bitsandbytes' 8-bit Adam (Adam8bit: its moments stored in 8 bits, blockwise "
            "quantised; extra 'bnb'), as GPT-NeoX. Optimizer type adam only; any ZeRO stage, "
            "not with optimizer offload or pos_emb learned (GPT-NeoX's StableEmbedding); a "
            "resume at another layout needs no_load_optim."
        ),
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
        if self.use_bnb_optimizer and self.optimizer.type.lower() not in ("adam", "adamw"):
            raise ValueError(
                f"use_bnb_optimizer replaces Adam with bitsandbytes' Adam8bit; optimizer type "
                f"{self.optimizer.type} has no 8-bit form here (use type adam, or drop "
                "use_bnb_optimizer)"
            )


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


Dtype = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class Fp16Config:
    enabled: bool = field(default=False, metadata=_doc("Train in fp16 with loss scaling."))
    fp16: bool | None = field(default=None, metadata=_doc("GPT-NeoX alias of enabled."))
    type: Literal["fp16", "bfloat16"] = field(
        default="fp16",
        metadata=_doc("GPT-NeoX: with enabled, 'bfloat16' trains in bfloat16 instead of fp16."),
    )
    auto_cast: bool = field(
        default=False,
        metadata=_doc("DeepSpeed: cast floating inputs to fp16 (neox's inputs are token ids)."),
    )
    loss_scale: float = field(default=0.0, metadata=_doc("0 = dynamic loss scaling."))
    loss_scale_window: int = field(default=1000, metadata=_doc("Steps between scale raises."))
    hysteresis: int = field(default=2, metadata=_doc("Overflows tolerated before lowering."))
    consecutive_hysteresis: bool = field(
        default=False, metadata=_doc("DeepSpeed: refill hysteresis after a step without overflow.")
    )
    min_loss_scale: float = field(default=1.0, metadata=_doc("Lowest dynamic loss scale."))
    initial_scale_power: int = field(default=16, metadata=_doc("Start at 2**this."))

    @property
    def on(self) -> bool:
        """Whether this block turns on 16-bit training (fp16, or bfloat16 by `type`)."""
        return self.enabled or bool(self.fp16)


_NO_LOSS_SCALE = _doc(
    "Accepted as GPT-NeoX's bf16 blocks copy it from fp16; bf16 needs no loss scaling."
)


@dataclass(frozen=True)
class Bf16Config:
    enabled: bool = field(default=False, metadata=_doc("Train in bfloat16."))
    bf16: bool | None = field(default=None, metadata=_doc("GPT-NeoX alias of enabled."))
    loss_scale: float | None = field(default=None, metadata=_NO_LOSS_SCALE)
    loss_scale_window: int | None = field(default=None, metadata=_NO_LOSS_SCALE)
    initial_scale_power: int | None = field(default=None, metadata=_NO_LOSS_SCALE)
    hysteresis: int | None = field(default=None, metadata=_NO_LOSS_SCALE)
    min_loss_scale: float | None = field(default=None, metadata=_NO_LOSS_SCALE)


@dataclass(frozen=True)
class DataTypesConfig:
    grad_accum_dtype: Dtype | None = field(
        default=None,
        metadata=_doc(
            "DeepSpeed's gradient accumulation dtype; default the training dtype. fp32 under "
            "bf16 or fp16 needs ZeRO stage >= 1 (bf16 with ZeRO 1: DeepSpeed's bf16 optimizer, "
            "gradients accumulated in fp32)."
        ),
    )


@dataclass(frozen=True)
class PrecisionConfig:
    precision: Literal["fp32", "fp16", "bfloat16"] | None = field(
        default=None, metadata=_doc("Training precision; default from fp16/bf16, else fp32.")
    )
    fp16: Fp16Config = field(default_factory=Fp16Config, metadata=_doc("DeepSpeed fp16 block."))
    bf16: Bf16Config = field(default_factory=Bf16Config, metadata=_doc("DeepSpeed bf16 block."))
    fp32_allreduce: bool = field(
        default=False,
        metadata=_doc(
            "All-reduce (and ZeRO's reduce-scatter) the gradients in fp32 when training in "
            "fp16 or bf16: DeepSpeed's communication_data_type fp32."
        ),
    )
    communication_data_type: Dtype | None = field(
        default=None,
        metadata=_doc("DeepSpeed: the dtype gradients are reduced in; default the training dtype."),
    )
    data_types: DataTypesConfig = field(
        default_factory=DataTypesConfig, metadata=_doc("DeepSpeed data_types block.")
    )

    def __post_init__(self) -> None:
        on = [name for name, enabled in self._flags().items() if enabled]
        if len(on) > 1:
            raise ValueError("fp16.enabled and bf16.enabled are both true; choose one")
        if self.precision is not None and on and on[0] != self.precision:
            raise ValueError(f"precision is {self.precision!r} but {on[0]} is enabled")
        if self.fp32_allreduce and self.communication_data_type not in (None, "fp32"):
            raise ValueError(
                f"fp32_allreduce asks for communication_data_type fp32 but it is "
                f"{self.communication_data_type!r}; keep one"
            )

    def _flags(self) -> dict[str, bool]:
        fp16 = self.fp16.on
        bf16 = self.bf16.enabled or bool(self.bf16.bf16)
        return {
            "fp16": fp16 and self.fp16.type == "fp16",
            "bfloat16": bf16 or (fp16 and self.fp16.type == "bfloat16"),
        }

    @property
    def dtype(self) -> Dtype:
        flags = self._flags()
        if flags["fp16"] or self.precision == "fp16":
            return "fp16"
        if flags["bfloat16"] or self.precision == "bfloat16":
            return "bf16"
        return "fp32"

    @property
    def communication_dtype(self) -> Dtype:
        """The dtype gradients are reduced in."""
        if self.fp32_allreduce:
            return "fp32"
        return self.communication_data_type or self.dtype


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
    load_from_fp32_weights: bool = field(
        default=True,
        metadata=_doc(
            "On resume, take the weights from the checkpoint's fp32 optimizer partitions; false: "
            "from its 16-bit model weights (DeepSpeed ZeRO key)."
        ),
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
    moe_expert_parallel_size: int = field(
        default=1,
        metadata=_doc(
            "Expert-parallel size: each group of this many adjacent data-parallel replicas "
            "splits every mixture-of-experts layer's experts among them (moe_num_experts / "
            "size each), the tokens sent to their experts and back by all-to-all; the experts' "
            "gradients and optimizer state (ZeRO) are reduced and partitioned over the "
            "replicas holding the same experts. Divides the data-parallel size and "
            "moe_num_experts; needs model_parallel_size 1, no pipeline and ZeRO stage 0-2 "
            "for now."
        ),
    )
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
    deepspeed_extra_args: dict[str, Any] | None = field(
        default=None,
        metadata=_doc(
            "More DeepSpeed config entries, merged into the DeepSpeed config neox writes (e.g. "
            "comms_logger, flops_profiler); an entry neox writes itself, or a key of this "
            "config, is refused."
        ),
    )
    distributed_timeout_minutes: float = field(
        default=COLLECTIVE_TIMEOUT_MINUTES,
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
        if self.moe_expert_parallel_size < 1:
            raise ValueError(
                f"moe_expert_parallel_size must be at least 1, got {self.moe_expert_parallel_size}"
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
    override_lr_scheduler: bool = field(
        default=False,
        metadata=_doc(
            "On resume, follow this config's learning-rate schedule (lr, min_lr, warmup, "
            "lr_decay_iters, lr_decay_style) from the checkpoint's step instead of the one the "
            "checkpoint was trained with. Without it or use_checkpoint_lr_scheduler a "
            "checkpoint whose schedule differs is refused. No effect with finetune (the "
            "config's schedule starts afresh)."
        ),
    )
    use_checkpoint_lr_scheduler: bool = field(
        default=False,
        metadata=_doc(
            "On resume, follow the learning-rate schedule the checkpoint was trained with, "
            "whatever this config's lr, min_lr, warmup, lr_decay_iters and lr_decay_style say."
        ),
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
        if self.override_lr_scheduler and self.use_checkpoint_lr_scheduler:
            raise ValueError(
                "override_lr_scheduler (the config's schedule) and use_checkpoint_lr_scheduler "
                "(the checkpoint's) are both true: set one of them"
            )

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
    use_comet: bool = field(
        default=False,
        metadata=_doc(
            "Log to Comet (extra 'comet'): the metrics of metrics.jsonl and the resolved config. "
            "Online when Comet finds an API key (COMET_API_KEY or its config file) and "
            "COMET_OFFLINE is not true; else an offline archive (a zip) in LOG_DIR/comet "
            "(log_dir, else save), uploaded later with `comet upload`."
        ),
    )
    comet_workspace: str | None = field(
        default=None, metadata=_doc("Comet workspace; default the account's default workspace.")
    )
    comet_project: str | None = field(
        default=None, metadata=_doc("Comet project; default Comet's Uncategorized Experiments.")
    )
    comet_experiment_name: str | None = field(
        default=None, metadata=_doc("Name of the Comet experiment; default a random name.")
    )
    comet_tags: tuple[str, ...] | None = field(
        default=None, metadata=_doc("Tags of the Comet experiment.")
    )
    comet_others: dict[str, Any] | None = field(
        default=None, metadata=_doc("Other metadata of the Comet experiment (Comet's 'others').")
    )
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


# neox-launch's launchers (`neox_launch.LAUNCHERS`, which neox-train does not import: the meta
# package's tests hold the two to one list)
Launcher = Literal[
    "local", "pdsh", "openmpi", "mvapich", "mpich", "impi", "slurm", "jsrun", "torchrun"
]


@dataclass(frozen=True)
class LaunchConfig:
    num_gpus: int | None = field(
        default=None, metadata=_doc("Workers per node (GPUs; on CPU, processes). Default: all.")
    )
    num_nodes: int = field(default=-1, metadata=_doc("Nodes to use; -1 = all in the hostfile."))
    global_num_gpus: int | None = field(
        default=None,
        metadata=_doc(
            "The run's world size, as GPT-NeoX records it: checked against the ranks the run "
            "starts (and the default world size of `neox check` and `neox plan`)."
        ),
    )
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
        if self.global_num_gpus is not None and self.global_num_gpus <= 0:
            raise ValueError(f"global_num_gpus must be positive, got {self.global_num_gpus}")
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


TrainImpl = Literal["normal", "dpo", "rm", "kto", "reinforce"]


@dataclass(frozen=True)
class ObjectiveConfig:
    """What training optimises: next-token prediction, or a preference objective on pairs
    (GPT-NeoX's train_impl and its keys; the losses are `neox_model.preference`)."""

    train_impl: TrainImpl = field(
        default="normal",
        metadata=_doc(
            "normal: next-token loss (with label files: supervised fine-tuning); dpo: direct "
            "preference optimisation on dataset_impl pairwise data against a frozen reference "
            "(the run's starting weights); rm: a reward model (a score head, value_head) "
            "trained on the pairs' scores at their last labelled position; kto: KTO on "
            "documents with reward files (*_reward_data_paths) against the same reference; "
            "reinforce: not supported (it needs an online data server)."
        ),
    )
    dpo_beta: float = field(
        default=0.1,
        metadata=_doc("DPO's beta: how far the policy may move from the reference."),
    )
    dpo_fp32: bool = field(
        default=True,
        metadata=_doc("DPO: log-probabilities from float32 logits (else the training dtype's)."),
    )
    dpo_reference_free: bool = field(
        default=False,
        metadata=_doc(
            "DPO without a reference model: its log-probabilities taken as 0 (no reward metrics)."
        ),
    )
    z_loss: float = field(
        default=0.0,
        metadata=_doc("rm: weight of the mean squared reward added to the loss."),
    )
    kto_beta: float = field(
        default=0.1, metadata=_doc("KTO's beta: how far the policy may move from the reference.")
    )
    kto_fp32: bool = field(
        default=True,
        metadata=_doc("KTO: log-probabilities from float32 logits (else the training dtype's)."),
    )
    kto_desirable_weight: float = field(
        default=1.0, metadata=_doc("KTO: weight of the desirable sequences' terms.")
    )
    kto_undesirable_weight: float = field(
        default=1.0, metadata=_doc("KTO: weight of the undesirable sequences' terms.")
    )

    def __post_init__(self) -> None:
        if self.train_impl == "reinforce":
            raise ValueError(_NOT_YET[self.train_impl])
        if self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be positive: {self.dpo_beta}")
        if self.z_loss < 0:
            raise ValueError(f"z_loss must be >= 0: {self.z_loss}")
        if self.kto_beta <= 0:
            raise ValueError(f"kto_beta must be positive: {self.kto_beta}")
        if min(self.kto_desirable_weight, self.kto_undesirable_weight) < 0:
            raise ValueError("kto_desirable_weight and kto_undesirable_weight must be >= 0")

    @property
    def preference(self) -> bool:
        """Whether the run trains on preference pairs (dataset_impl pairwise)."""
        return self.train_impl in ("dpo", "rm")

    @property
    def reference(self) -> bool:
        """Whether the objective compares the policy with a frozen reference model."""
        return self.train_impl == "kto" or (
            self.train_impl == "dpo" and not self.dpo_reference_free
        )


_NOT_YET = {
    "reinforce": (
        "train_impl reinforce is not supported: it trains on generations served by an online "
        "data server (GPT-NeoX's online_dataserver_*), which neox does not have"
    ),
}
