"""Rules that span sections of the run config: which parallel layouts can train which model."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neox_train.config.run_config import RunConfig
    from neox_train.config.sections import CurriculumConfig


def layout_problem(run: RunConfig) -> str | None:
    """Why the parallel layout cannot train this model, or None."""
    pipe, tp = run.parallel.pipe_parallel_size, run.parallel.model_parallel_size
    stage, model = run.parallel.zero_optimization.stage, run.model
    if pipe > 1 and stage > 1:
        return (
            f"zero_optimization.stage {stage} with pipe_parallel_size {pipe}: DeepSpeed's "
            "pipeline engine supports ZeRO stages 0 and 1 only"
        )
    if model.moe and model.moe_num_experts % tp:
        return (
            f"moe_num_experts {model.moe_num_experts} do not split over model_parallel_size "
            f"{tp} (each tensor-parallel rank holds moe_num_experts / model_parallel_size experts)"
        )
    if model.moe and tp > 1 and run.parallel.sequence_parallel:
        return "mixture-of-experts layers do not run under sequence_parallel yet"
    expert = run.parallel.moe_expert_parallel_size
    if expert > 1:
        if not model.moe:
            return (
                f"moe_expert_parallel_size {expert} needs mixture-of-experts layers "
                "(moe_num_experts > 1)"
            )
        if model.moe_num_experts % expert:
            return (
                f"moe_num_experts {model.moe_num_experts} do not split over "
                f"moe_expert_parallel_size {expert}"
            )
        if tp > 1 or pipe > 1:
            return (
                f"moe_expert_parallel_size {expert} with model_parallel_size {tp} and "
                f"pipe_parallel_size {pipe}: expert parallelism runs without tensor and "
                "pipeline parallelism for now"
            )
        if stage == 3:
            return (
                f"moe_expert_parallel_size {expert} with zero_optimization.stage 3 is not "
                "supported yet"
            )
    if run.parallel.zero_optimization.offloads_optimizer and run.optimizer.use_bnb_optimizer:
        return (
            "use_bnb_optimizer with an offloaded optimizer: ZeRO-Offload steps DeepSpeed's CPU "
            "Adam on the CPU, not bitsandbytes' 8-bit Adam; drop the offload or use_bnb_optimizer"
        )
    if run.parallel.zero_optimization.offloads_optimizer and (
        run.optimizer.optimizer.kind != "cpu_adam"
    ):
        return "an offloaded optimizer needs optimizer type cpu_adam (DeepSpeed's CPU Adam)"
    if run.optimizer.use_bnb_optimizer and model.pos_emb == "learned":
        return (
            "use_bnb_optimizer with pos_emb learned: GPT-NeoX then makes the position embedding "
            "bitsandbytes' StableEmbedding (a layer norm after the lookup), which neox does not "
            "have yet; use another pos_emb or drop use_bnb_optimizer"
        )
    if run.optimizer.use_bnb_optimizer and run.logging.log_optimizer_states:
        return (
            "log_optimizer_states with use_bnb_optimizer: bitsandbytes keeps Adam's moments as "
            "8-bit codes with per-block scales, whose norms neox does not log yet"
        )
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
    accumulation = _accumulation_problem(run) or _objective_problem(run)
    if accumulation:
        return accumulation
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


def _objective_problem(run: RunConfig) -> str | None:
    """Why train_impl cannot train this run, or None."""
    objective, data = run.objective, run.data
    impl = objective.train_impl
    if run.model.value_head and impl != "rm":
        return f"value_head (a reward model's score head) with train_impl {impl}: set train_impl rm"
    if objective.preference != (data.dataset_impl == "pairwise"):
        return (
            f"train_impl {impl} with dataset_impl {data.dataset_impl}: train_impl dpo and rm "
            "train on preference pairs (dataset_impl pairwise, pos_* and neg_* files), "
            "train_impl normal on documents (dataset_impl gpt2)"
        )
    rewards = bool(data.train_reward_data_paths)
    if rewards != (impl == "kto"):
        return (
            f"train_impl {impl} with{'' if rewards else 'out'} train_reward_data_paths: KTO "
            "trains on documents with reward files (train_data_paths and "
            "train_reward_data_paths), and only KTO reads reward files"
        )
    if (
        impl == "kto"
        and run.training.train_micro_batch_size_per_gpu is not None
        and (run.training.train_micro_batch_size_per_gpu % 2)
    ):
        return (
            "train_impl kto pairs the two halves of each micro batch for its KL estimate: "
            "train_micro_batch_size_per_gpu must be even, got "
            f"{run.training.train_micro_batch_size_per_gpu}"
        )
    if impl == "normal":
        return None
    if run.parallel.pipe_parallel_size > 1 and run.parallel.splits_sequence:
        return (
            f"train_impl {impl} with pipe_parallel_size {run.parallel.pipe_parallel_size} and "
            "sequence_parallel is not supported yet"
        )
    if run.model.moe:
        return f"train_impl {impl} with mixture-of-experts layers is not supported yet"
    curriculum = run.training.curriculum_learning
    if curriculum is not None and curriculum.enabled:
        return f"curriculum_learning with train_impl {impl}: pairs are whole sequences"
    if impl == "rm" and run.parallel.splits_sequence:
        return "train_impl rm with sequence_parallel is not supported yet"
    return None


def _accumulation_problem(run: RunConfig) -> str | None:
    """Why DeepSpeed cannot accumulate gradients in data_types.grad_accum_dtype, or None: it
    accumulates in the weights' dtype, or in fp32 under ZeRO."""
    dtype, accumulate = run.precision.dtype, run.precision.data_types.grad_accum_dtype
    if accumulate in (None, dtype):
        return None
    if accumulate != "fp32":
        return (
            f"data_types.grad_accum_dtype {accumulate} with {dtype} training: DeepSpeed "
            f"accumulates gradients in the training dtype or in fp32"
        )
    if run.parallel.zero_optimization.stage == 0:
        return (
            f"data_types.grad_accum_dtype fp32 with {dtype} training needs zero_optimization."
            "stage 1 or more (DeepSpeed accumulates in fp32 only in its ZeRO and bf16 optimizers)"
        )
    return None


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
