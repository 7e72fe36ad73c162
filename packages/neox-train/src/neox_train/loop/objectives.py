"""What a training step optimises on a micro batch (`train_impl`): the language-model loss,
DPO's on preference pairs against a frozen reference model, or a reward model's pairwise loss.

A micro batch is (inputs, labels) as `neox_train.loop.data` makes it; for pairs the chosen rows
come first, then the rejected ones. `Objective.loss` runs the engine's forward and returns the
loss to back-propagate and the micro batch's metrics (one float64 tensor, `metric_names`
order), which the loop averages over micro batches and ranks and logs beside the loss.

DPO's reference is a second model at the policy's layout (the same tensor-parallel shard and
dtype), frozen and in eval mode, holding the weights the run started from
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
from torch import nn

from neox_model import TPGroup
from neox_model.preference import dpo_loss, last_labelled, reward_model_loss
from neox_train.checkpoint import steps as checkpoint
from neox_train.checkpoint.relayout import load_weights
from neox_train.checkpoint.resume import StartPoint
from neox_train.config.schema import ConfigError
from neox_train.config.sections import ObjectiveConfig

log = logging.getLogger(__name__)

INIT = "init"  # a reference origin: the seeded initialisation (a fresh run)


class Objective:
    """The next-token loss (train_impl normal); no metrics of its own."""

    name = "normal"
    metric_names: tuple[str, ...] = ()

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return engine(inputs, labels=labels), torch.zeros(0, dtype=torch.float64)


class DPO(Objective):
    """Direct preference optimisation (`neox_model.preference.dpo_loss`); `reference` None is
    dpo_reference_free. Metrics: GPT-NeoX's names (the policy's and reference's mean sequence
    log-probabilities of the chosen and rejected sequences, the rewards, the reward accuracy and
    the margin)."""

    name = "dpo"

    def __init__(self, config: ObjectiveConfig, reference: nn.Module | None) -> None:
        self.beta, self.fp32, self.reference = config.dpo_beta, config.dpo_fp32, reference
        names = ["chosen_pos", "chosen_neg"]
        if reference is not None:
            names += ["ref_pos", "ref_neg", "chosen_rewards", "rejected_rewards"]
            names += ["reward_acc", "margins"]
        self.metric_names = tuple(names)

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        policy = engine(inputs, labels=labels, sequence_logps=True, fp32=self.fp32)
        chosen, rejected = policy.chunk(2)
        ref_chosen = ref_rejected = None
        if self.reference is not None:
            with torch.no_grad():
                reference = self.reference(
                    inputs, labels=labels, sequence_logps=True, fp32=self.fp32
                )
            ref_chosen, ref_rejected = reference.float().chunk(2)
        result = dpo_loss(chosen.float(), rejected.float(), ref_chosen, ref_rejected, self.beta)
        metrics = torch.tensor([result.metrics[n] for n in self.metric_names], dtype=torch.float64)
        return result.loss, metrics


class RewardModel(Objective):
    """A reward model (train_impl rm; the model has a value head): each sequence's score at its
    last labelled position (`neox_model.preference.last_labelled`; `preprocess-chat --for-rm`
    labels the final EOS), the pairwise loss with z_loss (`reward_model_loss`). Metrics:
    GPT-NeoX's names (the mean chosen and rejected scores, the margin and the accuracy)."""

    name = "rm"
    metric_names = ("pos_values", "neg_values", "margin", "accuracy")

    def __init__(self, config: ObjectiveConfig) -> None:
        self.z_loss = config.z_loss

    def loss(
        self, engine: Any, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = last_labelled(engine(inputs).float(), labels)
        chosen, rejected = scores.chunk(2)
        result = reward_model_loss(chosen, rejected, self.z_loss)
        metrics = torch.tensor([result.metrics[n] for n in self.metric_names], dtype=torch.float64)
        return result.loss, metrics


def build_objective(config: ObjectiveConfig, reference: nn.Module | None) -> Objective:
    if config.train_impl == "dpo":
        return DPO(config, reference)
    if config.train_impl == "rm":
        return RewardModel(config)
    return Objective()


def reference_origin(start: StartPoint) -> str:
    """Where a DPO run's reference weights come from (see the module's docstring)."""
    if start.step_dir is None:
        return INIT
    if start.weights_only:
        return str(Path(start.step_dir).resolve())
    recorded = checkpoint.saved_state(start.step_dir).reference
    if recorded is None:
        log.info(
            "%s records no DPO reference (it is not a DPO step): the reference is its weights",
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
                f"the DPO reference model, the weights this run started from ({origin}{whose}), "
                "is not there any more: restore that checkpoint to resume the run (or start a "
                "new run from this step with finetune: true)"
            )
        load_weights(module, Path(origin), tp)
        log.info("DPO reference model: the weights of %s", origin)
    else:
        log.info("DPO reference model: the run's initial weights (seeded)")
    module.to(dtype).eval()
    module.requires_grad_(False)
    return module
