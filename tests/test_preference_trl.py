"""neox's DPO, KTO and reward-model losses against TRL's own trainers' loss code, on the same
log-probabilities and rewards: TRL's DPOTrainer (loss_type sigmoid) and RewardTrainer compute the
loss and their reward metrics here through their real methods, with the model forward replaced
by the given numbers (a trainer is not built: TRL's methods read only the attributes set here)."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from neox_model.preference import dpo_loss, kto_loss, reward_model_loss

trl = pytest.importorskip("trl", reason="TRL is the peer these losses are compared with")

PAIRS, LENGTH, BETA = 4, 9, 0.1


class Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(tensor):
        return tensor

    gather_for_metrics = gather


def stub_trainer(**attributes):
    """What TRL's loss methods read of a trainer: the common parts, and `attributes`."""
    return SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        **attributes,
    )


def forward_outputs(log_probs, **extra):
    """A fused-head forward's outputs holding `log_probs` (the metrics' inputs as zeros)."""
    zeros = torch.zeros_like(log_probs)
    return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, **extra)


def per_token_logps(seed):
    """(2 * pairs, length - 1) token log-probabilities, chosen first, zero outside the
    completion, and the completion mask TRL reads them with."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2 * PAIRS, LENGTH, dtype=torch.long)
    for row in range(2 * PAIRS):
        mask[row, 3 + row % 3 :] = 1  # prompts of 3..5 tokens
    logps = -torch.rand(2 * PAIRS, LENGTH - 1, generator=generator, dtype=torch.float64) * 5
    return logps * mask[:, 1:], mask


def trl_dpo(policy, reference, mask):
    """TRL's DPOTrainer._compute_loss on these numbers: (loss, its train metrics)."""
    outputs = forward_outputs(policy, is_top1=torch.zeros_like(policy, dtype=torch.bool))
    trainer = stub_trainer(
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=BETA,
        label_smoothing=0.0,
        use_weighting=False,
    )
    ref = reference.sum(dim=1)
    inputs = {
        "input_ids": torch.zeros(2 * PAIRS, LENGTH, dtype=torch.long),
        "attention_mask": torch.ones(2 * PAIRS, LENGTH, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref[:PAIRS],
        "ref_rejected_logps": ref[PAIRS:],
    }
    model = lambda **kwargs: outputs  # noqa: E731 - the policy forward, replaced
    loss = trl.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {key: values[-1] for key, values in trainer._metrics["train"].items()}


def test_dpo_equals_trls_loss_and_rewards():
    policy, mask = per_token_logps(0)
    reference, _ = per_token_logps(1)
    policy.requires_grad_()
    expected, metrics = trl_dpo(policy, reference, mask)
    sums, ref_sums = policy.sum(dim=1), reference.sum(dim=1)
    result = dpo_loss(sums[:PAIRS], sums[PAIRS:], ref_sums[:PAIRS], ref_sums[PAIRS:], BETA)
    assert result.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    ours = torch.autograd.grad(result.loss, policy, retain_graph=True)[0]
    theirs = torch.autograd.grad(expected, policy)[0]
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert result.metrics["chosen_rewards"] == pytest.approx(metrics["rewards/chosen"], abs=1e-6)
    assert result.metrics["rejected_rewards"] == pytest.approx(
        metrics["rewards/rejected"], abs=1e-6
    )
    assert result.metrics["reward_acc"] == pytest.approx(metrics["rewards/accuracies"])
    assert result.metrics["margins"] == pytest.approx(metrics["rewards/margins"], abs=1e-6)


def test_the_reward_model_loss_equals_trls():
    generator = torch.Generator().manual_seed(2)
    rewards = torch.randn(2 * PAIRS, 1, generator=generator, dtype=torch.float64)
    rewards.requires_grad_()
    trainer = stub_trainer(args=SimpleNamespace(center_rewards_coefficient=None))
    inputs = {"attention_mask": torch.ones(2 * PAIRS, LENGTH, dtype=torch.long)}
    model = lambda **kwargs: SimpleNamespace(logits=rewards)  # noqa: E731
    expected = trl.RewardTrainer.compute_loss(trainer, model, inputs)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    result = reward_model_loss(rewards[:PAIRS, 0], rewards[PAIRS:, 0])
    assert result.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    ours = torch.autograd.grad(result.loss, rewards, retain_graph=True)[0]
    assert torch.allclose(ours, torch.autograd.grad(expected, rewards)[0], atol=1e-6)
    assert result.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert result.metrics["margin"] == pytest.approx(metrics["margin"], abs=1e-6)


def trl_kto(policy, reference, kl_policy, kl_reference, labels):
    """TRL's KTOTrainer._compute_loss on these numbers (summed sequence log-probabilities given
    as one labelled token each), with the KL estimate from the mismatched pairs given."""
    log_probs = torch.zeros(len(policy), LENGTH - 1, dtype=torch.float64)
    log_probs[:, -1] = policy
    outputs = forward_outputs(log_probs)
    trainer = stub_trainer(
        precompute_ref_logps=True,
        calculate_KL=True,
        loss_type="kto",
        beta=BETA,
        desirable_weight=1.0,
        undesirable_weight=1.0,
        _compute_kl_logps=lambda model, batch: kl_policy,
    )
    completion = torch.zeros(len(policy), LENGTH, dtype=torch.long)
    completion[:, -1] = 1
    inputs = {
        "input_ids": torch.zeros(len(policy), LENGTH, dtype=torch.long),
        "attention_mask": torch.ones(len(policy), LENGTH, dtype=torch.long),
        "completion_mask": completion,
        "label": labels,
        "ref_logps": reference,
        "ref_KL_logps": kl_reference,
    }
    model = lambda **kwargs: outputs  # noqa: E731
    return trl.KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def test_kto_equals_trls_where_their_definitions_meet():
    """GPT-NeoX's KTO with rewards of +-1 on every position and equal weights is TRL's, each
    half taking the other as its mismatched pairs, when no ratio in a KL half is negative (TRL
    clamps the mean, GPT-NeoX each ratio; see neox_model.preference)."""
    generator = torch.Generator().manual_seed(3)
    steps = LENGTH - 1
    reference = -torch.rand(2 * PAIRS, steps, generator=generator, dtype=torch.float64) * 3
    policy = reference + torch.rand(2 * PAIRS, steps, generator=generator, dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    rewards = (2.0 * labels - 1.0)[:, None].double().expand(-1, steps)
    mask = torch.ones(2 * PAIRS, steps, dtype=torch.bool)
    policy.requires_grad_()
    ours = kto_loss(policy, reference, rewards, mask, BETA).loss
    sums, ref_sums = policy.sum(dim=-1), reference.sum(dim=-1)
    half = slice(0, PAIRS), slice(PAIRS, None)
    theirs = 0.5 * sum(
        trl_kto(
            sums[half[side]],
            ref_sums[half[side]],
            sums[half[1 - side]].detach(),
            ref_sums[half[1 - side]],
            labels[half[side]],
        )
        for side in (0, 1)
    )
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    grad_ours = torch.autograd.grad(ours, policy, retain_graph=True)[0]
    grad_theirs = torch.autograd.grad(theirs, policy)[0]
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-6)
