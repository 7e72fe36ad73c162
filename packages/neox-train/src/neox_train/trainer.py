"""The training loop: DeepSpeed engine over a neox Transformer, packed token-file samples.

`setup` builds everything one rank needs (tokenizer, data, model, optimizer, engine) and
`train` runs it: validation before training, `train_iters` optimizer steps with a progress
line every `log_interval`, validation every `eval_interval`, checkpoints, a final validation and
test loss. Losses are averaged over every data-parallel rank, so every rank logs the same value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from neox_data import Tokenizer, build_tokenizer
from neox_model import ModelConfig, Transformer
from neox_train import checkpoint
from neox_train.batch import BatchLayout
from neox_train.data import Splits, build_splits, micro_batches, sample_counts
from neox_train.deepspeed_config import deepspeed_config
from neox_train.distributed import DistEnv
from neox_train.inputs import check_inputs
from neox_train.metrics import MetricsLog
from neox_train.optimizer import build_optimizer
from neox_train.progress import Progress
from neox_train.run_config import RunConfig
from neox_train.schedule import Schedule

log = logging.getLogger(__name__)


@dataclass
class Session:
    """Everything one rank trains with; built by `setup`."""

    run: RunConfig
    env: DistEnv
    batch: BatchLayout
    device: torch.device
    tokenizer: Tokenizer
    model_config: ModelConfig
    engine: Any  # deepspeed.DeepSpeedEngine
    splits: Splits
    metrics: MetricsLog
    start_step: int = 0


@dataclass
class TrainResult:
    train_losses: dict[int, float] = field(default_factory=dict)  # step -> mean loss
    valid_losses: dict[int, float] = field(default_factory=dict)  # step -> validation loss
    test_loss: float | None = None
    last_checkpoint: str | None = None


def schedule_for(run: RunConfig) -> Schedule:
    opt = run.optimizer
    decay = run.lr_decay_iters
    return Schedule(
        lr=opt.optimizer.params.lr,
        min_lr=opt.min_lr,
        warmup_iters=int(opt.warmup * decay),
        decay_iters=decay,
        style=opt.lr_decay_style,
    )


def setup(run: RunConfig, env: DistEnv, device: torch.device) -> Session:
    """Build tokenizer, data, model and engine (the process group must already exist)."""
    import deepspeed

    data = run.data
    data_path, vocab_file = check_inputs(run)
    batch = run.batch(env.world_size)
    tokenizer = build_tokenizer(data.tokenizer_type, vocab_file, data.merge_file)
    model_config = run.model.with_vocab(tokenizer.vocab_size)
    counts = sample_counts(run.training.train_iters, run.training.eval_iters, batch)
    splits = build_splits(data_path, data.split, model_config.seq_length, counts, run.training.seed)
    model = Transformer(model_config, seed=run.training.seed)
    if run.training.checkpoint_activations:
        model.checkpoint_num_layers = run.training.checkpoint_num_layers
    if run.training.torch_compile:
        model.compile_blocks()
    optimizer = build_optimizer(model, run.optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_for(run).factor)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(run, batch),
    )
    save = run.checkpoint.save
    metrics = MetricsLog(f"{save}/metrics.jsonl" if save and env.rank == 0 else None)
    session = Session(run, env, batch, device, tokenizer, model_config, engine, splits, metrics)
    if run.checkpoint.load:
        saved = checkpoint.load(engine, run.checkpoint.load)
        if saved is not None:
            session.start_step = saved.iteration
            log.info("resumed from %s at step %d", run.checkpoint.load, saved.iteration)
    return session


def _mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def _loss(engine: Any, tokens: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Mean next-token loss of a (micro, seq + 1) batch: inputs tokens[:, :-1], labels [:, 1:]."""
    tokens = tokens.to(device)
    return engine(tokens[:, :-1], labels=tokens[:, 1:])


def _seed_step(session: Session, step: int) -> None:
    """Dropout randomness depends only on (seed, step, rank): resumed runs repeat it exactly."""
    seq = np.random.SeedSequence([session.run.training.seed, step, session.env.rank])
    torch.manual_seed(int(seq.generate_state(1)[0]))


def train_step(session: Session, step: int) -> float:
    """One optimizer step (all micro batches); returns the loss averaged over all ranks."""
    engine, total = session.engine, 0.0
    _seed_step(session, step)
    for tokens in micro_batches(session.splits.train, step, session.batch, session.env.rank):
        loss = _loss(engine, tokens, session.device)
        engine.backward(loss)
        engine.step()
        total += loss.item()
    return _mean_over_ranks(total / session.batch.grad_accum)


@torch.no_grad()
def evaluate(session: Session, dataset: Any) -> float:
    """Mean loss over the first eval_iters global batches of `dataset`, all ranks together."""
    session.engine.eval()
    losses = [
        _loss(session.engine, tokens, session.device).item()
        for index in range(session.run.training.eval_iters)
        for tokens in micro_batches(dataset, index, session.batch, session.env.rank)
    ]
    session.engine.train()
    return _mean_over_ranks(float(np.mean(losses)))


def _save(session: Session, step: int) -> str:
    run = session.run
    assert run.checkpoint.save is not None
    state = checkpoint.SavedStep(step, step * session.batch.global_batch)
    path = checkpoint.save(
        session.engine,
        run.checkpoint.save,
        step,
        state=state,
        model_config=session.model_config,
        run_yaml=run.to_yaml_dict(),
        tokenizer_file=run.data.vocab_file,
        keep_last=run.checkpoint.keep_last_n_checkpoints,
    )
    log.info("saved checkpoint %s", path)
    return str(path)


def _validate(session: Session, step: int, result: TrainResult, label: str) -> None:
    if session.splits.valid is None or not session.run.training.eval_iters:
        return
    loss = evaluate(session, session.splits.valid)
    result.valid_losses[step] = loss
    session.metrics.write(step=step, valid_loss=loss)
    log.info("validation loss %s step %d: %.4f (ppl %.1f)", label, step, loss, np.exp(loss))


def train(session: Session) -> TrainResult:
    run, result = session.run, TrainResult()
    training, factor = run.training, run.checkpoint.checkpoint_factor
    _validate(session, session.start_step, result, "before training at")
    progress = Progress(training.train_iters, session.start_step, tokens_per_step(session))
    for step in range(session.start_step + 1, training.train_iters + 1):
        result.train_losses[step] = loss = train_step(session, step - 1)
        progress.update(step, loss, session.engine.get_lr()[0])
        session.metrics.write(step=step, train_loss=loss, lr=progress.lr, **progress.rates())
        if step % run.logging.log_interval == 0 or step == training.train_iters:
            log.info(progress.line())
        if step % training.eval_interval == 0 and step != training.train_iters:
            _validate(session, step, result, "at")
        if run.checkpoint.save and factor and step % factor == 0:
            result.last_checkpoint = _save(session, step)
    _validate(session, training.train_iters, result, "after training at")
    if session.splits.test is not None and training.eval_iters:
        result.test_loss = evaluate(session, session.splits.test)
        log.info("test loss: %.4f (ppl %.1f)", result.test_loss, np.exp(result.test_loss))
        session.metrics.write(step=training.train_iters, test_loss=result.test_loss)
    if run.checkpoint.save and not (factor and training.train_iters % factor == 0):
        result.last_checkpoint = _save(session, training.train_iters)  # the end is always saved
    return result


def tokens_per_step(session: Session) -> int:
    return session.batch.global_batch * session.model_config.seq_length
