"""What a training step optimises on a micro batch (`train_impl`): the language-model loss,
DPO's on preference pairs against a frozen reference model, a reward model's pairwise loss, or
KTO's on documents with per-token rewards against the same kind of reference.

A micro batch is (inputs, labels) as `neox_train.loop.data` makes it; for pairs the chosen rows
come first, then the rejected ones. `Objective.loss` runs the engine's forward and returns the
loss to back-propagate and the micro batch's metrics (one float64 tensor, `metric_names`
order), which the loop averages over micro batches and ranks and logs beside the loss.

In a pipeline the last stage computes the objective's loss from its output (`pipeline_loss`,
DeepSpeed's loss_fn; the metrics recorded there), on micro batches whose labels carry what it
needs (`pipeline_batches`: for DPO the reference's log-probabilities, computed first).

DPO's and KTO's reference is a second model at the policy's layout (the same tensor-parallel shard,
pipeline stage and dtype; in a pipeline run stage after stage, `PipelineReference`), frozen and
in eval mode, holding the weights the run started from
(`reference_origin`): the seeded initialisation of a fresh run, or the checkpoint a run
fine-tunes (`finetune`, or `load` of another run). A run's checkpoints record that origin and a
resumed run reloads the reference from it, never from the step it resumes (which holds the
trained policy), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from neox_model import TPGroup
from neox_model.preference import (
    dpo_loss,
    kto_loss,
    last_labelled,
    reward_model_loss,
    sequence_logps,
    token_logps,
)
from neox_model.tensor_parallel import IGNORE_INDEX
from neox_train.checkpoint import steps as checkpoint
from neox_train.checkpoint.relayout import load_weights
from neox_train.checkpoint.resume import StartPoint
from neox_train.config.schema import ConfigError
from neox_train.config.sections import ObjectiveConfig

log = logging.getLogger(__name__)

INIT = "init"  # a reference origin: the seeded initialisation (a fresh run)


class Objective:
    """The next-token loss (train_impl normal); no metrics of its own."""

    metric_names: tuple[str, ...] = ()
    own_loss = False  # whether a pipeline computes this loss (`pipeline_loss`), not its own

    def __init__(self) -> None:
        # a pipeline's last stage: each micro batch's metrics, from `pipeline_loss`
        self.records: list[torch.Tensor] = []
        # DPO and KTO: the frozen reference, set once the weights are loaded (a module at the
        # policy's layout, or a `PipelineReference`)
        self.reference: Any = None

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return engine(inputs, labels=labels), torch.zeros(0, dtype=torch.float64)

    def head_loss(self, outputs: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and metrics of the model's output (this rank's logits shard, or scores)."""
        raise NotImplementedError

    def pipeline_loss(self, outputs: torch.Tensor, labels: Any) -> torch.Tensor:
        """The loss a pipeline's last stage computes (DeepSpeed's PipelineModule `loss_fn`),
        its metrics recorded."""
        loss, metrics = self.head_loss(outputs, labels)
        self.records.append(metrics)
        return loss

    def pipeline_batches(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, Any]]:
        """A step's micro batches as a pipeline takes them (what `pipeline_loss` reads)."""
        return list(pairs)


def _metrics(values: dict[str, float], names: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([values[n] for n in names], dtype=torch.float64)


class DPO(Objective):
    """Direct preference optimisation (`neox_model.preference.dpo_loss`) against `reference`
    (set once the weights are loaded: a module at the policy's layout, or a `PipelineReference`
    in a pipeline); with dpo_reference_free, none. Metrics: GPT-NeoX's names (the policy's and
    reference's mean sequence log-probabilities of the chosen and rejected sequences, the
    rewards, the reward accuracy and the margin)."""

    own_loss = True

    def __init__(self, config: ObjectiveConfig, tp: TPGroup) -> None:
        super().__init__()
        self.beta, self.fp32, self.tp = config.dpo_beta, config.dpo_fp32, tp
        self.free = config.dpo_reference_free
        names = ["chosen_pos", "chosen_neg"]
        if not self.free:
            names += ["ref_pos", "ref_neg", "chosen_rewards", "rejected_rewards"]
            names += ["reward_acc", "margins"]
        self.metric_names = tuple(names)

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        policy = engine(inputs, labels=labels, logps="sequence", fp32=self.fp32)
        reference = None
        if not self.free:
            with torch.no_grad():
                reference = self.reference(inputs, labels=labels, logps="sequence", fp32=self.fp32)
        return self._loss(policy, reference)

    def _loss(
        self, policy: torch.Tensor, reference: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        chosen, rejected = policy.float().chunk(2)
        ref_chosen, ref_rejected = (None, None) if reference is None else reference.float().chunk(2)
        result = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)
        return result.loss, _metrics(result.metrics, self.metric_names)

    def head_loss(self, outputs: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        labels, reference = labels
        policy = sequence_logps(outputs, labels, self.tp, self.fp32)
        return self._loss(policy, None if self.free else reference)

    def pipeline_batches(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, Any]]:
        """(inputs, (labels, the reference's log-probabilities)): those on the last stage, which
        reads them (zeros elsewhere, and without a reference)."""
        found = [None] * len(pairs) if self.free else self.reference.logps(pairs, self.fp32)
        return [
            (inputs, (labels, ref if ref is not None else labels.new_zeros(labels.shape[0])))
            for (inputs, labels), ref in zip(pairs, found, strict=True)
        ]


class RewardModel(Objective):
    """A reward model (train_impl rm; the model has a value head): each sequence's score at its
    last labelled position (`neox_model.preference.last_labelled`; `preprocess-chat --for-rm`
    labels the final EOS), the pairwise loss with z_loss (`reward_model_loss`). Metrics:
    GPT-NeoX's names (the mean chosen and rejected scores, the margin and the accuracy)."""

    own_loss = True
    metric_names = ("pos_values", "neg_values", "margin", "accuracy")

    def __init__(self, config: ObjectiveConfig) -> None:
        super().__init__()
        self.z_loss = config.z_loss

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head_loss(engine(inputs), labels)

    def head_loss(self, outputs: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores = last_labelled(outputs.float(), labels)
        chosen, rejected = scores.chunk(2)
        result = reward_model_loss(chosen, rejected, self.z_loss)
        return result.loss, _metrics(result.metrics, self.metric_names)


class KTO(Objective):
    """KTO (`neox_model.preference.kto_loss`, GPT-NeoX's form) on documents with per-token
    rewards, against `reference` (as DPO's): the labels of a micro batch are (labels, rewards),
    its two halves each other's mismatched pairs for the KL estimate. Metrics: GPT-NeoX's names
    (the policy's and the reference's log-probabilities, of the desirable and undesirable
    tokens, the KL estimate, the reward accuracy and the summed policy rewards)."""

    own_loss = True
    metric_names = (
        "ref_logp",
        "policy_logp",
        "pos_ref_logp",
        "neg_ref_logp",
        "pos_policy_logp",
        "neg_policy_logp",
        "kl",
        "reward_acc",
        "policy_rewards",
    )

    def __init__(self, config: ObjectiveConfig, tp: TPGroup) -> None:
        super().__init__()
        self.beta, self.fp32, self.tp = config.kto_beta, config.kto_fp32, tp
        self.weights = (config.kto_desirable_weight, config.kto_undesirable_weight)

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels, rewards = labels
        policy = engine(inputs, labels=labels, logps="token", fp32=self.fp32)
        with torch.no_grad():
            reference = self.reference(inputs, labels=labels, logps="token", fp32=self.fp32)
        return self._loss(policy, reference, rewards, labels)

    def _loss(
        self,
        policy: torch.Tensor,
        reference: torch.Tensor,
        rewards: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = labels != IGNORE_INDEX
        result = kto_loss(
            policy.float(), reference.float(), rewards.float(), mask, self.beta, *self.weights
        )
        return result.loss, _metrics(result.metrics, self.metric_names)

    def head_loss(self, outputs: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        labels, rewards, reference = labels
        policy = token_logps(outputs, labels, self.tp, self.fp32)
        return self._loss(policy, reference, rewards, labels)

    def pipeline_batches(
        self, pairs: list[tuple[torch.Tensor, Any]]
    ) -> list[tuple[torch.Tensor, Any]]:
        """(inputs, (labels, rewards, the reference's per-token log-probabilities)): those on
        the last stage (zeros elsewhere)."""
        plain = [(inputs, labels) for inputs, (labels, _) in pairs]
        found = self.reference.logps(plain, self.fp32, per_token=True)
        return [
            (inputs, (labels, rewards, ref if ref is not None else rewards.new_zeros(labels.shape)))
            for (inputs, (labels, rewards)), ref in zip(pairs, found, strict=True)
        ]


def build_objective(config: ObjectiveConfig, tp: TPGroup) -> Objective:
    if config.train_impl == "dpo":
        return DPO(config, tp)
    if config.train_impl == "rm":
        return RewardModel(config)
    if config.train_impl == "kto":
        return KTO(config, tp)
    return Objective()


class PipelineReference:
    """DPO's frozen reference in a pipeline: this stage's layers (a PipelineModule built as the
    policy's, without an engine), run forward only, stage after stage: each stage receives the
    previous one's activations, runs its layers and sends them on; the last computes each
    sequence's log-probability."""

    def __init__(self, module: nn.Module, parallel: Any, dtype: torch.dtype, hidden: int) -> None:
        self.module, self.parallel, self.dtype, self.hidden = module, parallel, dtype, hidden

    @torch.no_grad()
    def logps(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], fp32: bool, per_token: bool = False
    ) -> list[torch.Tensor | None]:
        """The reference's sequence log-probabilities (`per_token`: each token's) of each micro
        batch on the last stage (None on the others)."""
        grid, pipe = self.parallel.grid, self.parallel.dims.pipe
        stage = int(grid.get_stage_id())
        last = stage == pipe - 1
        hidden = self.hidden
        found: list[torch.Tensor | None] = []
        for inputs, labels in pairs:
            if stage == 0:
                x = inputs
            else:
                x = torch.empty((*inputs.shape, hidden), dtype=self.dtype, device=inputs.device)
                dist.recv(x, src=grid.stage_to_global(stage_id=stage - 1))
            out = self.module(x)
            if last:
                logps = token_logps if per_token else sequence_logps
                found.append(logps(out, labels, self.parallel.tp, fp32))
            else:
                dist.send(out.contiguous(), dst=grid.stage_to_global(stage_id=stage + 1))
                found.append(None)
        return found


def reference_origin(start: StartPoint) -> str:
    """Where a DPO run's reference weights come from (see the module's docstring)."""
    if start.step_dir is None:
        return INIT
    if start.weights_only:
        return str(Path(start.step_dir).resolve())
    recorded = checkpoint.saved_state(start.step_dir).reference
    if recorded is None:
        log.info(
            "%s records no reference model (not a DPO or KTO step): the reference is its weights",
            start.step_dir,
        )
        return str(Path(start.step_dir).resolve())
    return recorded


def build_reference(
    module: nn.Module, origin: str, tp: TPGroup, dtype: torch.dtype, resumed_from: Path | None
) -> nn.Module:
    """The frozen reference: `module` (built as the policy is, so seeded as it was) with the
    weights of `origin`, in `dtype` and eval mode."""
    if origin != INIT:
        if not (Path(origin) / "model.json").is_file():
            whose = f", recorded in {resumed_from}" if resumed_from is not None else ""
            raise ConfigError(
                f"the reference model, the weights this run started from ({origin}{whose}), "
                "is not there any more: restore that checkpoint to resume the run (or start a "
                "new run from this step with finetune: true)"
            )
        load_weights(module, Path(origin), tp)
        log.info("reference model: the weights of %s", origin)
    else:
        log.info("reference model: the run's initial weights (seeded)")
    module.to(dtype).eval()
    module.requires_grad_(False)
    return module
