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
- `kto_loss` (Ethayarajh et al., 2024, "KTO", eq. 7-8) as GPT-NeoX computes it
  (`train_impl: kto`): per-token rewards (a reward file: > 0 desirable, < 0 undesirable) weight
  the sequences; the micro batch's two halves are each other's mismatched pairs for the KL
  estimate, z = mean over the other half of max(0, log pi(y) - log ref(y)) (no gradient); a
  sequence's term is 1 - sigmoid(beta * mean_t(reward_t) * (log pi(y) - log ref(y) - z)) and
  the loss is 0.5 x (first half's mean weight x its terms + second half's likewise), averaged.
  Where TRL's KTOTrainer differs: TRL estimates z from separately built mismatched pairs and
  clamps the mean (GPT-NeoX clamps each sequence's ratio, then averages), weights each sequence
  by its own desirable / undesirable weight (GPT-NeoX by its half's mean weight), and has no
  per-token reward (the sign of the label only; GPT-NeoX scales beta by the mean reward over the
  sequence's positions). With rewards of +-1 on every position, equal weights and non-negative
  ratios in the KL halves the two agree (tested).
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


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, tp: TPGroup | None = None, fp32: bool = True
) -> torch.Tensor:
    """logits (batch, seq, vocab / tp), labels (batch, seq) with `IGNORE_INDEX` where no token
    counts -> (batch, seq) each labelled token's log-probability, 0 elsewhere."""
    if fp32:
        logits = logits.float()
    per_token = vocab_parallel_cross_entropy(logits, labels, tp or TPGroup.single())
    return -(per_token * (labels != IGNORE_INDEX))


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, tp: TPGroup | None = None, fp32: bool = True
) -> torch.Tensor:
    """logits (batch, seq, vocab / tp), labels (batch, seq) with `IGNORE_INDEX` where no token
    counts -> (batch,) the summed log-probabilities of the labelled tokens."""
    return token_logps(logits, labels, tp, fp32).sum(dim=-1)


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


class KTOResult(NamedTuple):
    loss: torch.Tensor  # ()
    metrics: dict[str, float]  # GPT-NeoX's names


def kto_loss(
    policy: torch.Tensor,
    reference: torch.Tensor,
    rewards: torch.Tensor,
    loss_mask: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOResult:
    """GPT-NeoX's KTO loss (see the module's docstring) of per-token log-probabilities `policy`
    and `reference` (batch, seq), per-token `rewards` (batch, seq) and the `loss_mask` (batch,
    seq) of the tokens that count; the batch splits into two equal halves."""
    if policy.shape[0] % 2:
        raise ValueError(
            f"KTO pairs the two halves of a micro batch for its KL estimate: "
            f"train_micro_batch_size_per_gpu must be even, got {policy.shape[0]}"
        )
    mask = loss_mask.to(policy.dtype)
    policy, reference = policy * mask, (reference * mask).detach()
    totals = rewards.sum(dim=-1)
    weights = (totals > 0.001).to(policy.dtype) * desirable_weight
    weights = weights + (totals < -0.001).to(policy.dtype) * undesirable_weight
    pol1, pol2 = policy.chunk(2)
    ref1, ref2 = reference.chunk(2)
    reward1, reward2 = rewards.chunk(2)
    weight1, weight2 = weights.chunk(2)
    kl1 = torch.clamp((pol1 - ref1).sum(dim=-1), min=0).mean().detach()
    kl2 = torch.clamp((pol2 - ref2).sum(dim=-1), min=0).mean().detach()
    ratio1, ratio2 = (pol1 - ref1).sum(dim=-1), (pol2 - ref2).sum(dim=-1)
    term1 = 1 - torch.sigmoid(beta * reward1.mean(dim=-1) * (ratio1 - kl2))
    term2 = 1 - torch.sigmoid(beta * reward2.mean(dim=-1) * (ratio2 - kl1))
    loss = (0.5 * weight1.mean() * term1 + 0.5 * weight2.mean() * term2).mean()
    with torch.no_grad():
        desirable, undesirable = (
            (rewards > 0.001).to(policy.dtype),
            (rewards < -0.001).to(policy.dtype),
        )
        policy_rewards = beta * rewards * (policy - reference)
        metrics = {
            "ref_logp": float(reference.sum(dim=-1).mean()),
            "policy_logp": float(policy.sum(dim=-1).mean()),
            "pos_ref_logp": float((reference * desirable).sum(dim=-1).mean()),
            "neg_ref_logp": float((reference * undesirable).sum(dim=-1).mean()),
            "pos_policy_logp": float((policy * desirable).sum(dim=-1).mean()),
            "neg_policy_logp": float((policy * undesirable).sum(dim=-1).mean()),
            "kl": float((policy - reference).sum() / mask.sum().clamp(min=1)),
            "reward_acc": float((policy_rewards.sum(dim=-1) > 0).to(policy.dtype).mean()),
            "policy_rewards": float(policy_rewards.sum()),
        }
    return KTOResult(loss, metrics)
