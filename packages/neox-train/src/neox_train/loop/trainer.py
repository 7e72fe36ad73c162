"""The training loop: DeepSpeed engine over a neox Transformer, packed token-file samples.

`setup` builds everything one rank needs (tokenizer, data, model, optimizer, engine) and
`train` runs it: validation before training, `train_iters` optimizer steps with a progress
line every `log_interval`, validation every `eval_interval`, checkpoints, a final validation and
test loss. Losses are averaged over every data-parallel rank, so every rank logs the same value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist

from neox_data import Tokenizer, build_tokenizer
from neox_model import EngineLayout, ModelConfig, Transformer, read_manifest
from neox_train.checkpoint import steps as checkpoint
from neox_train.checkpoint.resume import (
    StartPoint,
    choose_start,
    model_differences,
    verify_start,
)
from neox_train.checkpoint.run_lock import RunLock, lock_save_dir
from neox_train.checkpoint.s3 import S3Uploader, download_latest
from neox_train.config.batch import BatchLayout
from neox_train.config.inputs import check_inputs
from neox_train.config.run_config import RunConfig
from neox_train.config.schema import ConfigError
from neox_train.engine.build import TrainingEngine, build_engine, build_module
from neox_train.engine.deepspeed_config import zero_stage
from neox_train.engine.deepspeed_internals import check_version
from neox_train.engine.schedule import Schedule, resumed_schedule
from neox_train.loop.curriculum import SeqlenCurriculum
from neox_train.loop.data import Splits, build_datasets, sample_counts, training_pairs
from neox_train.loop.objectives import (
    Objective,
    PipelineReference,
    build_objective,
    build_reference,
    reference_origin,
)
from neox_train.loop.preemption import Preempted, Preemption
from neox_train.monitoring.flops import no_peak_reason, peak_tflops, step_flops
from neox_train.monitoring.parameter_norms import optimizer_state_norms, parameter_norms
from neox_train.monitoring.profiling import StepProfiler
from neox_train.monitoring.progress import Progress, Throughput
from neox_train.monitoring.writers import Monitor, build_monitor
from neox_train.parallel.distributed import DistEnv
from neox_train.parallel.topology import Parallel, build_parallel, parallel_dims
from neox_train.parallel.watchdog import Heartbeat, HungRank, is_timeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """Everything one rank trains with; built by `setup` in one go, never changed after."""

    run: RunConfig  # its model config has the tokenizer's vocab_size
    env: DistEnv
    batch: BatchLayout
    device: torch.device
    tokenizer: Tokenizer
    engine: TrainingEngine
    schedule: Schedule  # the LR schedule followed (on resume, the one `run_schedule` chose)
    splits: Splits
    monitor: Monitor
    parallel: Parallel
    start_step: int  # the step the run continues after (0: a fresh start)
    curriculum: SeqlenCurriculum | None  # when curriculum_learning is enabled
    uploader: S3Uploader | None  # rank 0, when s3_path is set
    profiler: StepProfiler | None  # when profile or memory_profiling is set
    heartbeat: Heartbeat | None  # with more than one rank
    lock: RunLock | None  # rank 0, when save is set: held until the process ends
    # the last step's mixture-of-experts metrics (moe_* names), averaged over micro batches
    # and ranks; empty for a dense model
    moe_metrics: dict[str, float] = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)  # train_impl's loss and metrics
    # train_impl dpo: where the reference's weights came from (recorded in each checkpoint)
    reference_origin: str | None = None
    # the last step's metrics of the objective (e.g. DPO's reward_acc), averaged likewise,
    # and the last validation's (or test's)
    objective_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def pipeline(self) -> bool:
        return self.parallel.dims.pipe > 1


@dataclass
class TrainResult:
    train_losses: dict[int, float] = field(default_factory=dict)  # step -> mean loss
    valid_losses: dict[int, float] = field(default_factory=dict)  # step -> validation loss
    test_loss: float | None = None
    last_checkpoint: str | None = None


def schedule_for(run: RunConfig) -> Schedule:
    opt = run.optimizer
    return Schedule(
        lr=opt.optimizer.params.lr,
        min_lr=opt.min_lr,
        warmup_iters=run.warmup_iters,
        decay_iters=run.lr_decay_iters,
        style=opt.lr_decay_style,
    )


def setup(run: RunConfig, env: DistEnv, device: torch.device) -> Session:
    """Build tokenizer, data, model and engine (the process group must already exist)."""
    check_version()  # of DeepSpeed, whose internals neox uses
    data = run.data
    _, vocab_file = check_inputs(run)
    if run.precision.dtype == "fp16" and device.type != "cuda":
        raise ConfigError(
            "fp16 training needs a GPU (its loss scaling runs on CUDA); use bf16 or fp32 here"
        )
    batch = run.batch(env.world_size)
    if run.objective.train_impl == "kto" and batch.micro_batch % 2:
        raise ConfigError(
            "train_impl kto pairs the two halves of each micro batch for its KL estimate: the "
            f"micro batch must be even, got {batch.micro_batch}"
        )
    parallel = build_parallel(parallel_dims(run, env.world_size))
    log.info(
        "layout: %s; %d samples per step (micro batch %d x %d accumulated x %d replicas)",
        parallel.dims.describe(),
        batch.global_batch,
        batch.micro_batch,
        batch.grad_accum,
        batch.data_parallel,
    )
    tokenizer = build_tokenizer(data.tokenizer_type, vocab_file, data.merge_file)
    run = dataclasses.replace(run, model=run.model.with_vocab(tokenizer.vocab_size))
    model_config = run.model
    counts = sample_counts(run.training.train_iters, run.training.eval_iters, batch)
    splits = build_datasets(data, model_config.seq_length, counts, run.training.seed)
    ckpt = run.checkpoint
    lock = lock_save_dir(ckpt.save)
    load = _local_source(ckpt.load, ckpt.save, env.rank)
    start = choose_start(load, ckpt.save, ckpt.finetune, ckpt.overwrite_save, model_config)
    verify_start(start)
    padded_vocab = _resume_padded_vocab(start, model_config, parallel)
    schedule = run_schedule(start, run)
    objective = build_objective(run.objective, parallel.tp)
    loss_fn = objective.pipeline_loss if objective.own_loss else None  # in a pipeline
    engine = build_engine(
        run, model_config, parallel, batch, schedule, device, padded_vocab, loss_fn
    )
    start_step = _load_start(engine, start, run, parallel)
    origin = None
    if run.objective.reference:
        origin = reference_origin(start)
        resumed = None if start.weights_only else start.step_dir
        dtype = next(engine.module.parameters()).dtype  # as DeepSpeed holds the policy
        module = build_module(run, model_config, parallel, padded_vocab, loss_fn).to(device)
        module = build_reference(module, origin, parallel.tp, dtype, resumed)
        pipelined = parallel.dims.pipe > 1
        hidden = model_config.hidden_size
        objective.reference = (
            PipelineReference(module, parallel, dtype, hidden) if pipelined else module
        )
    profiler = StepProfiler(run.logging, run.logging.log_dir or run.checkpoint.save, env.rank)
    curriculum = run.training.curriculum_learning
    return Session(
        run=run,
        env=env,
        batch=batch,
        device=device,
        tokenizer=tokenizer,
        engine=engine,
        schedule=schedule,
        splits=splits,
        monitor=build_monitor(run.logging, ckpt.save, env.rank, run.to_yaml_dict()),
        parallel=parallel,
        start_step=start_step,
        curriculum=(
            SeqlenCurriculum(curriculum, model_config.seq_length)
            if curriculum is not None and curriculum.enabled
            else None
        ),
        uploader=(
            S3Uploader(ckpt.s3_path, ckpt.s3_chunk_size) if ckpt.s3_path and env.rank == 0 else None
        ),
        profiler=profiler if profiler.enabled else None,
        heartbeat=(
            Heartbeat(env, run.parallel.distributed_timeout_minutes) if env.world_size > 1 else None
        ),
        lock=lock,
        objective=objective,
        reference_origin=origin,
    )


def run_schedule(start: StartPoint, run: RunConfig) -> Schedule:
    """The LR schedule the run follows: the config's, or on a resume with the checkpoint's
    training state the one GPT-NeoX's rules choose (`resumed_schedule`); `finetune` and
    `no_load_optim` start the config's afresh. Decided before the engine is built."""
    config, ckpt = schedule_for(run), run.checkpoint
    if start.step_dir is None or start.weights_only or ckpt.no_load_optim:
        return config
    saved = checkpoint.saved_state(start.step_dir)
    chosen = resumed_schedule(
        config,
        saved.schedule,
        override=ckpt.override_lr_scheduler,
        use_checkpoint=ckpt.use_checkpoint_lr_scheduler,
        where=str(start.step_dir),
        step=saved.iteration,
    )
    if saved.schedule is None:
        log.info(
            "%s records no LR schedule (an earlier neox saved it): this config's", start.step_dir
        )
    elif saved.schedule != config:
        whose = "this config's" if chosen is config else "the checkpoint's"
        log.info("LR schedule from step %d: %s, %s", saved.iteration, whose, chosen.describe())
    return chosen


def _load_start(
    engine: TrainingEngine, start: StartPoint, run: RunConfig, parallel: Parallel
) -> int:
    """Restore the chosen step into the engine (nothing for a fresh start); the step it was."""
    if start.step_dir is None:
        log.info("starting from scratch (%s)", start.why)
        return 0
    saved = checkpoint.load(
        engine,
        start.step_dir,
        current=engine_layout(run, parallel),
        tp=parallel.tp,
        weights_only=start.weights_only,
        optimizer=not run.checkpoint.no_load_optim,
        new=_new_head(start, run.model),
    )
    what = "weights of" if start.weights_only else "resumed from"
    log.info("%s %s at step %d (%s)", what, start.origin, saved.iteration, start.why)
    return saved.iteration


def _new_head(start: StartPoint, config: ModelConfig) -> frozenset[str]:
    """A reward model fine-tuned from a language model's step: its score head, which starts
    from its seeded initialisation (the step's output layer is not read). Refused for a step of
    another model, or a reward model's step as a language model's start."""
    assert start.step_dir is not None
    saved = read_manifest(start.step_dir).config
    if saved.value_head == config.value_head:
        return frozenset()
    if not start.weights_only or saved.value_head:
        raise ConfigError(
            f"{start.step_dir} is a {'reward' if saved.value_head else 'language'} model's step "
            f"and this run trains a {'reward' if config.value_head else 'language'} model: "
            "a reward model (train_impl rm) starts from a language model's weights with "
            "finetune: true, never the other way round"
        )
    differences = model_differences(saved, dataclasses.replace(config, value_head=False))
    if differences:
        raise ConfigError(f"{start.step_dir} holds another model: {'; '.join(differences)}")
    log.info(
        "%s is a language model's step: the reward model takes its weights, not its output "
        "layer, and starts its score head from the seed",
        start.step_dir,
    )
    return frozenset({"score.weight"})


def _resume_padded_vocab(start: StartPoint, config: ModelConfig, parallel: Parallel) -> int | None:
    """The checkpoint's embedding rows, kept when resuming at another tensor-parallel size."""
    if start.step_dir is None:
        return None
    saved = checkpoint.saved_padded_vocab(start.step_dir)
    tensor = parallel.dims.tensor
    if saved == config.padded_vocab(tensor):
        return None
    if saved % tensor or saved < (config.vocab_size or 0):
        raise ConfigError(
            f"{start.step_dir} holds an embedding of {saved} rows, which does not split over "
            f"model_parallel_size {tensor} (or is smaller than the vocabulary, "
            f"{config.vocab_size}): resume at a model_parallel_size that divides it"
        )
    return saved


def engine_layout(run: RunConfig, parallel: Parallel) -> EngineLayout:
    dims = parallel.dims
    stage = zero_stage(run, dims.data // dims.expert)  # the replicas DeepSpeed reduces over
    return EngineLayout(
        dims.tensor, dims.pipe, dims.data, stage, run.precision.dtype, expert=dims.expert
    )


def _local_source(load: str | None, save: str | None, rank: int) -> str | None:
    """`load` as a local directory: an s3:// address is downloaded first (by rank 0, into
    SAVE/from_s3, on the filesystem the ranks share)."""
    if not load or not load.startswith("s3://"):
        return load
    local = Path(save or ".") / "from_s3"
    found = download_latest(load, local) if rank == 0 else None
    box = [str(found) if found else None]
    if dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        log.info("%s holds no checkpoint yet: starting from scratch", load)
    return box[0]


def _mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def dropout_seed(seed: int, step: int, data_rank: int, tensor_rank: int | None) -> int:
    """The seed of a rank's dropout at `step`: a function of (seed, step, data-parallel rank),
    so resumed runs repeat it exactly. The tensor-parallel ranks of a replica draw the same masks
    (their activations are replicated), except under sequence parallelism, where each drops its
    own positions: there `tensor_rank` is given and enters the seed."""
    entropy = [seed, step, data_rank] + ([] if tensor_rank is None else [tensor_rank])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _seed_step(session: Session, step: int) -> None:
    split = session.run.parallel.splits_sequence
    tensor_rank = session.parallel.tp.rank if split else None
    seed = dropout_seed(session.run.training.seed, step, session.parallel.data_rank, tensor_rank)
    torch.manual_seed(seed)


def _pairs(
    session: Session, dataset: Any, step: int, seqlen: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) of each of this rank's micro batches of global step `step`, the first
    `seqlen` positions only when a curriculum shortens them; labels are IGNORE_INDEX where a
    position carries no loss (see `neox_train.loop.data`)."""
    rank, end = session.parallel.data_rank, seqlen or session.run.model.seq_length
    eod = session.tokenizer.eod_id if session.run.data.eod_mask_loss else None

    def placed(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :end].to(session.device)

    return [
        (
            placed(inputs),
            tuple(map(placed, labels)) if isinstance(labels, tuple) else placed(labels),
        )
        for inputs, labels in training_pairs(dataset, step, session.batch, rank, eod)
    ]


def train_step(session: Session, step: int) -> float:
    """One optimizer step (all micro batches); returns the loss averaged over all ranks."""
    engine = session.engine
    _seed_step(session, step)
    seqlen = session.curriculum.seqlen(step + 1) if session.curriculum else None
    pairs = _pairs(session, session.splits.train, step, seqlen)
    if session.pipeline:
        if seqlen is not None:
            engine.reset_activation_shape()  # the pipeline's buffers follow the length
        objective = session.objective
        if objective.own_loss:
            batches = objective.pipeline_batches(pairs)
            loss = float(engine.train_batch(data_iter=iter(batches)))
            session.objective_metrics.update(_pipeline_metrics(session))
            return _mean_over_ranks(loss)
        loss = float(engine.train_batch(data_iter=iter(pairs)))
        if not session.run.model.moe:
            return _mean_over_ranks(loss)
        # the last stage's loss recorded each micro batch's language-model loss and auxiliary
        # losses; the other stages add nothing
        metrics, lm = MoEMetrics(), 0.0
        records = engine.module.loss_fn.records
        for lm_loss, aux in records:
            lm += metrics.add_losses(lm_loss, aux)
        records.clear()
        return _moe_means(session, metrics, lm)
    total = 0.0
    scope = session.profiler.range if session.profiler else _no_range
    moe = MoEMetrics() if session.run.model.moe else None
    objective = session.objective
    metrics = torch.zeros(len(objective.metric_names), dtype=torch.float64)
    for inputs, labels in pairs:
        with scope("forward"):
            loss, values = objective.loss(engine, inputs, labels)
            metrics += values
        with scope("backward"):
            engine.backward(loss)
        with scope("optimizer"):
            engine.step()
        if moe is not None:  # the language-model loss; the auxiliary losses logged apart
            total += moe.add(engine.module)
        else:
            total += loss.item()
    if moe is not None:
        return _moe_means(session, moe, total)
    if objective.metric_names:
        packed = torch.cat([metrics, torch.tensor([total], dtype=torch.float64)])
        means = _means_over_ranks(packed, session.batch.grad_accum)
        session.objective_metrics.update(zip(objective.metric_names, means[:-1], strict=True))
        return means[-1]
    return _mean_over_ranks(total / session.batch.grad_accum)


def _means_over_ranks(sums: torch.Tensor, micro_batches: int) -> list[float]:
    """float64 sums over this rank's micro batches -> their means over the micro batches and
    every rank (tensor-parallel ranks hold the same values), in one all-reduce."""
    dist.all_reduce(sums)
    return (sums / (micro_batches * dist.get_world_size())).tolist()


def _pipeline_metrics(session: Session) -> dict[str, float]:
    """The objective's metrics of the micro batches a pipeline just ran, recorded by its last
    stage, averaged over them and over the last stage's ranks (every rank gets them)."""
    objective = session.objective
    records = objective.records
    sums = (
        torch.stack(records).sum(dim=0)
        if records
        else torch.zeros(len(objective.metric_names), dtype=torch.float64)
    )
    packed = torch.cat([sums, torch.tensor([float(len(records))], dtype=torch.float64)])
    records.clear()
    dist.all_reduce(packed)
    means = packed[:-1] / packed[-1]
    return dict(zip(objective.metric_names, means.tolist(), strict=True))


class MoEMetrics:
    """A step's mixture-of-experts metrics, summed over its micro batches: the unweighted
    load-balancing and z losses and the largest and smallest expert's share of the token-slots
    (1 / moe_num_experts each when balanced), over every MoE layer."""

    NAMES = (
        "moe_load_balancing_loss",
        "moe_z_loss",
        "moe_max_expert_share",
        "moe_min_expert_share",
    )

    def __init__(self) -> None:
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64)

    def add(self, module: Any) -> float:
        """Add one micro batch's (from the model's last forward); its language-model loss."""
        return self.add_losses(module.lm_loss, module.moe_losses)

    def add_losses(self, lm_loss: torch.Tensor, aux: Any) -> float:
        """Add one micro batch's auxiliary losses (`MoELosses`); its language-model loss."""
        share = aux.expert_share
        values = [aux.load_balancing, aux.z, share.max(), share.min()]
        self.sums += torch.stack([v.detach().double().cpu() for v in values])
        return float(lm_loss.item())


def _moe_means(session: Session, metrics: MoEMetrics, lm: float) -> float:
    """The step's language-model loss (`lm`: summed over this rank's micro batches) and its MoE
    metrics (`session.moe_metrics`), averaged over the micro batches and the ranks that computed
    them (in a pipeline the last stage's), in one all-reduce."""
    micro_batches = session.batch.grad_accum
    pipe = session.parallel.dims.pipe
    computed = float(pipe == 1 or session.parallel.pipe_stage == pipe - 1)
    packed = torch.cat([metrics.sums, torch.tensor([lm, computed], dtype=torch.float64)])
    dist.all_reduce(packed)
    ranks = packed[-1]  # how many ranks computed the losses
    means = packed[:-1] / (ranks * micro_batches)
    session.moe_metrics.update(zip(MoEMetrics.NAMES, means[:-1].tolist(), strict=True))
    return float(means[-1])


@torch.no_grad()
def evaluate(session: Session, dataset: Any) -> float:
    """Mean loss over the first eval_iters global batches of `dataset`, all ranks together;
    the objective's metrics (means likewise) in `session.eval_metrics`."""
    engine, losses, objective = session.engine, [], session.objective
    metrics = torch.zeros(len(objective.metric_names), dtype=torch.float64)
    for index in range(session.run.training.eval_iters):
        pairs = _pairs(session, dataset, index)
        if session.pipeline:
            batches = objective.pipeline_batches(pairs)
            losses.append(float(engine.eval_batch(iter(batches), num_micro_batches=len(pairs))))
        else:
            engine.eval()
            for inputs, labels in pairs:
                loss, values = objective.loss(engine, inputs, labels)
                losses.append(float(loss))
                metrics += values
            engine.train()
    if objective.metric_names and session.pipeline:  # recorded by the last stage
        session.eval_metrics.update(_pipeline_metrics(session))
    elif objective.metric_names:
        packed = torch.cat([metrics, torch.tensor([sum(losses)], dtype=torch.float64)])
        means = _means_over_ranks(packed, len(losses))
        session.eval_metrics.update(zip(objective.metric_names, means[:-1], strict=True))
        return means[-1]
    return _mean_over_ranks(float(np.mean(losses)))


def _save(session: Session, step: int) -> str:
    run = session.run
    assert run.checkpoint.save is not None
    state = checkpoint.SavedStep(
        step, step * session.batch.global_batch, session.schedule, session.reference_origin
    )
    path = checkpoint.save(
        session.engine,
        run.checkpoint.save,
        step,
        state=state,
        config=run.model,
        engine_layout=engine_layout(run, session.parallel),
        parallel=session.parallel,
        run_yaml=run.to_yaml_dict(),
        tokenizer_files=tuple(f for f in (run.data.vocab_file, run.data.merge_file) if f),
        keep_last=run.checkpoint.keep_last_n_checkpoints,
    )
    log.info("saved checkpoint %s", path)
    if session.uploader is not None:
        session.uploader.upload(path)  # in the background; `latest` goes up last
    return str(path)


def _validate(session: Session, step: int, result: TrainResult, label: str) -> None:
    if session.splits.valid is None or not session.run.training.eval_iters:
        return
    loss = evaluate(session, session.splits.valid)
    result.valid_losses[step] = loss
    if session.objective.metric_names:  # a preference loss: no perplexity
        metrics = {f"valid_{name}": value for name, value in session.eval_metrics.items()}
        session.monitor.log(step, valid_loss=loss, **metrics)
        shown = ", ".join(f"{name} {value:.4f}" for name, value in session.eval_metrics.items())
        log.info("validation loss %s step %d: %.4f (%s)", label, step, loss, shown)
        return
    session.monitor.log(step, valid_loss=loss, valid_ppl=float(np.exp(loss)))
    log.info("validation loss %s step %d: %.4f (ppl %.1f)", label, step, loss, np.exp(loss))


def train(session: Session, preemption: Preemption | None = None) -> TrainResult:
    """Train to train_iters; with `preemption`, a signal ends the run after a checkpoint
    (raising `Preempted`)."""
    run, result = session.run, TrainResult()
    training = run.training
    saves = run.checkpoint.save_steps(training.train_iters) if run.checkpoint.save else set()
    if session.start_step == 0 and 0 in saves:
        _save(session, 0)  # extra_save_iters: [0] keeps the initial weights
    _validate(session, session.start_step, result, "before training at")
    try:
        return _train_steps(session, preemption, result, saves)
    except RuntimeError as err:
        if session.heartbeat is None or isinstance(err, HungRank) or not is_timeout(err):
            raise
        raise HungRank(session.heartbeat.explain(err)) from err
    finally:
        if session.profiler is not None:
            session.profiler.stop()  # a run that ends inside the profiled steps


def _train_steps(
    session: Session,
    preemption: Preemption | None,
    result: TrainResult,
    saves: AbstractSet[int],
) -> TrainResult:
    run, training, profiler = session.run, session.run.training, session.profiler
    progress = Progress(training.train_iters, session.start_step, throughput(session))
    skips = SkipCounter(training.max_skipped_steps)
    for step in range(session.start_step + 1, training.train_iters + 1):
        lr = session.engine.get_lr()[0]  # the rate this step uses
        skipped_before = session.engine.skipped_steps
        if profiler is not None:
            profiler.before_step(step)
            with profiler.range(f"step {step}"):
                result.train_losses[step] = loss = train_step(session, step - 1)
            profiler.after_step(step)
        else:
            result.train_losses[step] = loss = train_step(session, step - 1)
        if session.heartbeat is not None:
            session.heartbeat.finished(step)
        skips.update(step, session.engine.skipped_steps > skipped_before)
        values = {"train_loss": loss, "lr": lr, **step_extras(session, step)}
        values.update(progress.rates(step))
        session.monitor.log(step, **values)
        if step % run.logging.log_interval == 0 or step == training.train_iters:
            log.info(progress.line(step, values))
        if step % training.eval_interval == 0 and step != training.train_iters:
            _validate(session, step, result, "at")
            _run_eval_tasks(session, step)
        if step in saves:
            result.last_checkpoint = _save(session, step)
        if _exit_now(session, step, saves):
            return result
        if preemption is not None and preemption.agreed():
            _stop_for_preemption(session, step, saves)
    _validate(session, training.train_iters, result, "after training at")
    _run_eval_tasks(session, training.train_iters)
    if session.splits.test is not None and training.eval_iters:
        result.test_loss = loss = evaluate(session, session.splits.test)
        if session.objective.metric_names:
            metrics = {f"test_{name}": value for name, value in session.eval_metrics.items()}
            log.info("test loss: %.4f", loss)
            session.monitor.log(training.train_iters, test_loss=loss, **metrics)
        else:
            log.info("test loss: %.4f (ppl %.1f)", loss, np.exp(loss))
            ppl = float(np.exp(loss))
            session.monitor.log(training.train_iters, test_loss=loss, test_ppl=ppl)
    _finish(session)
    return result


@contextlib.contextmanager
def _no_range(name: str) -> Iterator[None]:
    yield


class Diverged(RuntimeError):
    """Too many optimizer steps in a row skipped for non-finite gradients."""


class SkipCounter:
    """Counts optimizer steps skipped in a row (DeepSpeed skips a step whose gradients are not
    finite) and stops a run that keeps skipping."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row = limit, 0

    def update(self, step: int, skipped: bool) -> None:
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if skipped:
            log.warning("step %d skipped: non-finite gradients (%d in a row)", step, self.in_a_row)
        if self.in_a_row >= self.limit:
            raise Diverged(
                f"{self.in_a_row} optimizer steps in a row had non-finite gradients (the last at "
                f"step {step}): the run has diverged; lower the learning rate, check the data, or "
                "resume from an earlier checkpoint"
            )


def _finish(session: Session) -> None:
    """Close the metric writers and wait for the checkpoint uploads."""
    session.monitor.close()
    if session.uploader is not None:
        session.uploader.wait()


def _run_eval_tasks(session: Session, step: int) -> None:
    """lm-eval's tasks on the model as it is now; metrics logged as eval/TASK/METRIC."""
    training = session.run.training
    if not training.eval_tasks:
        return
    from neox_eval import evaluate_tasks  # the 'eval' extra, checked before training

    results = evaluate_tasks(
        cast(Transformer, session.engine.module),  # no pipeline: the rules refuse eval_tasks
        session.tokenizer,
        list(training.eval_tasks),
        seq_length=session.run.model.seq_length,
        limit=training.eval_tasks_limit,
        batch_size=session.batch.micro_batch,
    )
    flat = {
        f"eval/{task}/{name}": value
        for task, metrics in results.items()
        for name, value in metrics.items()
    }
    session.monitor.log(step, **flat)
    for task, metrics in results.items():
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        log.info("lm-eval %s at step %d: %s", task, step, shown)


def _stop_for_preemption(session: Session, step: int, saves: AbstractSet[int]) -> None:
    if session.run.checkpoint.save and step not in saves:
        _save(session, step)
    log.info("preempted: stopping after step %d (exit code %d)", step, Preempted.exit_code)
    _finish(session)
    raise Preempted(step)


def _exit_now(session: Session, step: int, saves: AbstractSet[int]) -> bool:
    """At exit_interval: save (once) and stop before the end of training."""
    interval, last = session.run.training.exit_interval, session.run.training.train_iters
    if not interval or step % interval or step == last:
        return False
    if session.run.checkpoint.save and step not in saves:
        _save(session, step)
    log.info("exit_interval %d reached at step %d: stopping", interval, step)
    return True


def throughput(session: Session) -> Throughput:
    """What a step processes: for preference pairs two sequences per sample; a reference
    model's forward (DPO, KTO) counts as hardware FLOPs (a third of a training step's)."""
    run, config, batch = session.run, session.run.model, session.batch
    sequences = batch.global_batch * (2 if run.objective.preference else 1)
    flops = step_flops(
        config,
        sequences,
        config.padded_vocab(session.parallel.dims.tensor),
        recompute=run.training.checkpoint_activations,
    )
    if run.objective.reference:
        flops = dataclasses.replace(flops, hardware=flops.hardware + flops.model / 3)
    device = torch.cuda.get_device_name() if session.device.type == "cuda" else None
    peak = peak_tflops(device, run.logging.peak_tflops, run.precision.dtype)
    reason = no_peak_reason(device, run.precision.dtype) if peak is None else None
    if reason:
        log.info(reason)
    return Throughput(
        tokens_per_step=sequences * config.seq_length,
        samples_per_step=batch.global_batch,
        flops_per_step=flops.model,
        devices=session.env.world_size,
        peak_tflops=peak,
        hardware_flops_per_step=flops.hardware,
    )


def step_extras(session: Session, step: int) -> dict[str, float | None]:
    """Gradient norm, the fp16 loss scale, and parameter norms when asked for."""
    engine = session.engine
    norm = engine.get_global_grad_norm()
    extras: dict[str, float | None] = {"grad_norm": None if norm is None else float(norm)}
    extras["skipped_steps"] = float(engine.skipped_steps)
    extras.update(session.moe_metrics)
    extras.update(session.objective_metrics)
    if session.curriculum is not None:
        extras["seqlen"] = float(session.curriculum.seqlen(step))
    if session.run.precision.dtype == "fp16":
        extras["loss_scale"] = float(getattr(engine.optimizer, "cur_scale", float("nan")))
    parallel = session.parallel
    if session.run.logging.log_param_norm:
        extras.update(
            parameter_norms(
                engine.module, session.run.model, parallel.slice.rank, parallel.replica_group
            )
        )
    if session.run.logging.log_optimizer_states:
        group = parallel.replica_group
        extras.update(optimizer_state_norms(engine, parallel.slice.rank, group))
    return extras
