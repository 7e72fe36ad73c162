"""Preference objectives on sequence scores: DPO's loss from log-probabilities and a reward model's
pairwise loss, as GPT-NeoX defines them (`train_impl: dpo` and `rm`), with their metrics.

- `sequence_logps`: log pi(y | x) of each sequence, the sum of the log-probabilities of its
  labelled tokens (labels not `IGNORE_INDEX`), from vocabulary-sharded logits (the negated
  per-token cross-entropy, as GPT-NeoX's `get_logp`); float32 logits first with `fp32`
  (`dpo_fp32`).
- `dpo_loss` (Rafailov et al., 2023, "Direct Preference Optimization", eq. 7):
  -log sigmoid(beta * ((log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l)))), averaged
  over the pairs; `reference_free` takes the reference's log-probabilities as 0
  (`dpo_reference_free`). Metrics as GPT-NeoX logs them: the rewards beta * (log pi - log ref)
  of the chosen and rejected sequences, the reward accuracy (chosen above rejected) and the
  margin, each averaged over the pairs (no rewards without a reference). TRL's DPOTrainer with
  `loss_type="sigmoid"` computes the same loss and rewards from the same log-probabilities.
- `reward_model_loss`: -log sigmoid(r_w - r_l) averaged over the pairs, plus z_loss x the mean
  of r_w^2 + r_l^2 (GPT-NeoX's `z_loss`). TRL's RewardTrainer has the same pairwise term; its
  optional `center_rewards_coefficient` penalises (r_w + r_l)^2 instead, which is not this.
  `last_labelled` reads a reward model's per-position scores at each sequence's last labelled
  position (with `preprocess-chat --for-rm`, the final EOS).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from neox_model.tensor_parallel import (
    IGNORE_INDEX,
    TPGroup,
    vocab_parallel_cross_entropy,
)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, tp: TPGroup | None = None, fp32: bool = True
) -> torch.Tensor:
    """logits (batch, seq, vocab / tp), labels (batch, seq) with `IGNORE_INDEX` where no token
    counts -> (batch,) the summed log-probabilities of the labelled tokens."""
    if fp32:
        logits = logits.float()
    per_token = vocab_parallel_cross_entropy(logits, labels, tp or TPGroup.single())
    kept = labels != IGNORE_INDEX
    return -(per_token * kept).sum(dim=-1)


class DPOResult(NamedTuple):
    loss: torch.Tensor  # () mean over the pairs
    chosen_rewards: torch.Tensor  # (pairs,) beta * (log pi - log ref), no gradient
    rejected_rewards: torch.Tensor  # (pairs,)
    metrics: dict[str, float]  # GPT-NeoX's names, averaged over the pairs


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor | None,
    reference_rejected: torch.Tensor | None,
    beta: float,
) -> DPOResult:
    """The DPO loss of (pairs,) sequence log-probabilities; a reference of None is reference-
    free DPO (the reference's log-probabilities taken as 0; no reward metrics)."""
    free = reference_chosen is None or reference_rejected is None
    ref_chosen = torch.zeros_like(policy_chosen) if free else reference_chosen
    ref_rejected = torch.zeros_like(policy_rejected) if free else reference_rejected
    assert ref_chosen is not None and ref_rejected is not None
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    loss = -F.logsigmoid(beta * logits).mean()
    with torch.no_grad():
        chosen_rewards = beta * (policy_chosen - ref_chosen)
        rejected_rewards = beta * (policy_rejected - ref_rejected)
        metrics = {
            "chosen_pos": float(policy_chosen.mean()),
            "chosen_neg": float(policy_rejected.mean()),
        }
        if not free:
            metrics.update(
                ref_pos=float(ref_chosen.mean()),
                ref_neg=float(ref_rejected.mean()),
                chosen_rewards=float(chosen_rewards.mean()),
                rejected_rewards=float(rejected_rewards.mean()),
                reward_acc=float((chosen_rewards > rejected_rewards).float().mean()),
                margins=float((chosen_rewards - rejected_rewards).mean()),
            )
    return DPOResult(loss, chosen_rewards, rejected_rewards, metrics)


class RewardResult(NamedTuple):
    loss: torch.Tensor  # ()
    metrics: dict[str, float]  # GPT-NeoX's names: pos_values, neg_values, margin, accuracy


def reward_model_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, z_loss: float = 0.0
) -> RewardResult:
    """The pairwise reward-model loss of (pairs,) scores of the chosen and rejected sequences."""
    loss = -F.logsigmoid(chosen - rejected).mean()
    if z_loss:
        loss = loss + (z_loss * (chosen.square() + rejected.square())).mean()
    with torch.no_grad():
        metrics = {
            "pos_values": float(chosen.mean()),
            "neg_values": float(rejected.mean()),
            "margin": float((chosen - rejected).mean()),
            "accuracy": float((chosen > rejected).float().mean()),
        }
    return RewardResult(loss, metrics)


def last_labelled(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """values (batch, seq), labels (batch, seq) -> (batch,) each sequence's value at its last
    labelled position; a ValueError when a sequence has none."""
    kept = labels != IGNORE_INDEX
    if not bool(kept.any(dim=-1).all()):
        raise ValueError(
            "a sequence has no labelled position to read its reward at (preprocess reward-model "
            "data with preprocess-chat --for-rm: its final EOS is labelled)"
        )
    positions = torch.arange(labels.shape[-1], device=labels.device)
    last = torch.where(kept, positions, -1).amax(dim=-1)  # (batch,)
    return values.gather(-1, last.unsqueeze(-1)).squeeze(-1)
