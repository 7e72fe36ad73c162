"""DPO and reward-model losses against references written here from their papers' formulas, in
float64 one pair at a time (TRL's own code is compared in the repository's tests/)."""

import math

import pytest
import torch

from neox_model.preference import (
    dpo_loss,
    kto_loss,
    last_labelled,
    reward_model_loss,
    sequence_logps,
)

PAIRS = 6
BETA = 0.1


def logps(seed):
    generator = torch.Generator().manual_seed(seed)
    return [
        -(torch.rand(PAIRS, generator=generator, dtype=torch.float64) * 40 + 5) for _ in range(4)
    ]


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def reference_dpo(pi_w, pi_l, ref_w, ref_l, beta):
    """Rafailov et al. (2023), eq. 7, and the gradient of each pair's term (sigma(-u) = 1 -
    sigma(u)): d/d log pi(y_w) = -beta * sigma(-u) / n, d/d log pi(y_l) = +beta * sigma(-u) / n."""
    n, total, grad_w, grad_l = len(pi_w), 0.0, [], []
    for i in range(n):
        u = beta * ((pi_w[i] - ref_w[i]) - (pi_l[i] - ref_l[i]))
        total -= log_sigmoid(u)
        s = 1.0 / (1.0 + math.exp(u))  # sigma(-u)
        grad_w.append(-beta * s / n)
        grad_l.append(beta * s / n)
    return total / n, grad_w, grad_l


def test_dpo_loss_rewards_and_gradients_equal_the_papers_formula():
    pi_w, pi_l, ref_w, ref_l = logps(0)
    pi_w.requires_grad_()
    pi_l.requires_grad_()
    result = dpo_loss(pi_w, pi_l, ref_w, ref_l, BETA)
    result.loss.backward()
    loss, grad_w, grad_l = reference_dpo(
        pi_w.tolist(), pi_l.tolist(), ref_w.tolist(), ref_l.tolist(), BETA
    )
    assert result.loss.item() == pytest.approx(loss, abs=1e-12)
    assert pi_w.grad.tolist() == pytest.approx(grad_w, abs=1e-12)
    assert pi_l.grad.tolist() == pytest.approx(grad_l, abs=1e-12)
    chosen = [BETA * (a - b) for a, b in zip(pi_w.tolist(), ref_w.tolist(), strict=True)]
    rejected = [BETA * (a - b) for a, b in zip(pi_l.tolist(), ref_l.tolist(), strict=True)]
    metrics = result.metrics
    assert metrics["chosen_rewards"] == pytest.approx(sum(chosen) / PAIRS)
    assert metrics["rejected_rewards"] == pytest.approx(sum(rejected) / PAIRS)
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    assert metrics["reward_acc"] == pytest.approx(wins / PAIRS)
    assert metrics["margins"] == pytest.approx((sum(chosen) - sum(rejected)) / PAIRS)


def test_reference_free_dpo_takes_the_reference_as_zero_and_logs_no_rewards():
    pi_w, pi_l, _, _ = logps(1)
    result = dpo_loss(pi_w, pi_l, None, None, BETA)
    zeros = [0.0] * PAIRS
    loss, _, _ = reference_dpo(pi_w.tolist(), pi_l.tolist(), zeros, zeros, BETA)
    assert result.loss.item() == pytest.approx(loss, abs=1e-12)
    assert "chosen_rewards" not in result.metrics and "reward_acc" not in result.metrics


def test_the_reward_model_loss_is_the_pairwise_logistic_loss_plus_the_z_loss():
    generator = torch.Generator().manual_seed(2)
    chosen, rejected = torch.randn(2, PAIRS, generator=generator, dtype=torch.float64)
    chosen.requires_grad_()
    result = reward_model_loss(chosen, rejected, z_loss=0.01)
    expected = sum(
        -log_sigmoid(w - r) + 0.01 * (w * w + r * r)
        for w, r in zip(chosen.tolist(), rejected.tolist(), strict=True)
    )
    assert result.loss.item() == pytest.approx(expected / PAIRS, abs=1e-12)
    result.loss.backward()
    expected_grad = [
        (-1.0 / (1.0 + math.exp(w - r)) + 0.02 * w) / PAIRS
        for w, r in zip(chosen.tolist(), rejected.tolist(), strict=True)
    ]
    assert chosen.grad.tolist() == pytest.approx(expected_grad, abs=1e-12)
    wins = sum(w > r for w, r in zip(chosen.tolist(), rejected.tolist(), strict=True))
    assert result.metrics["accuracy"] == pytest.approx(wins / PAIRS)


def test_sequence_logps_sum_the_labelled_tokens_log_probabilities():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 7, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 7), generator=generator)
    labels[0, :4] = -100  # a prompt
    labels[2, 5:] = -100  # padding
    got = sequence_logps(logits, labels)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    for b in range(3):
        expected = sum(
            log_probs[b, t, labels[b, t]].item() for t in range(7) if labels[b, t] != -100
        )
        assert got[b].item() == pytest.approx(expected, rel=1e-6)


def test_last_labelled_reads_each_sequences_last_labelled_position():
    values = torch.arange(12.0).view(2, 6)
    labels = torch.full((2, 6), -100)
    labels[0, 3] = 5  # an EOS at position 3, padding after it
    labels[1, 1:6] = 7
    assert last_labelled(values, labels).tolist() == [3.0, 11.0]
    labels[1] = -100
    with pytest.raises(ValueError, match="no labelled position"):
        last_labelled(values, labels)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def reference_kto(policy, reference, rewards, mask, beta, w_desirable, w_undesirable):
    """GPT-NeoX's KTO, one sequence at a time: each half's sequences against the KL estimate
    of the other half, mean over t of the rewards scaling beta, the halves' mean weights."""
    n, half = len(policy), len(policy) // 2
    ratio = [
        sum((p - r) * m for p, r, m in zip(policy[i], reference[i], mask[i], strict=True))
        for i in range(n)
    ]
    weight = []
    for row in rewards:
        total = sum(row)
        weight.append(
            (w_desirable if total > 0.001 else 0.0) + (w_undesirable if total < -0.001 else 0.0)
        )
    halves = [range(half), range(half, n)]
    kl = [sum(max(ratio[i], 0.0) for i in h) / half for h in halves]
    mean_weight = [sum(weight[i] for i in h) / half for h in halves]
    total = 0.0
    for j in range(half):
        for side in (0, 1):
            i = halves[side][j]
            mean_reward = sum(rewards[i]) / len(rewards[i])
            term = 1 - sigmoid(beta * mean_reward * (ratio[i] - kl[1 - side]))
            total += 0.5 * mean_weight[side] * term
    return total / half


def kto_inputs(seed):
    generator = torch.Generator().manual_seed(seed)
    shape = (PAIRS, 7)
    policy = -torch.rand(shape, generator=generator, dtype=torch.float64) * 3
    reference = -torch.rand(shape, generator=generator, dtype=torch.float64) * 3
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, :2] = False  # prompts
    mask[1, 5:] = False  # padding
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    rewards = sign[:, None] * torch.rand(shape, generator=generator, dtype=torch.float64)
    return policy, reference, rewards, mask


def test_kto_loss_equals_gpt_neoxs_definition_and_its_gradient_the_numerical_one():
    policy, reference, rewards, mask = kto_inputs(4)
    args = (reference, rewards, mask, BETA, 1.0, 1.5)
    policy.requires_grad_()
    result = kto_loss(policy, *args)
    expected = reference_kto(
        policy.tolist(), reference.tolist(), rewards.tolist(), mask.tolist(), BETA, 1.0, 1.5
    )
    assert result.loss.item() == pytest.approx(expected, abs=1e-12)
    (grad,) = torch.autograd.grad(result.loss, policy)
    # the KL estimates carry no gradient: a numerical derivative holding them fixed
    step = 1e-6
    numerical = torch.zeros_like(policy)
    for index in [(0, 3), (1, 4), (4, 6), (5, 2)]:
        for sign in (1, -1):
            moved = policy.detach().clone()
            moved[index] += sign * step
            numerical[index] += sign * _kto_fixed_kl(moved, policy.detach(), *args) / (2 * step)
        assert grad[index].item() == pytest.approx(numerical[index].item(), abs=1e-7), index
    kl = ((policy.detach() - reference) * mask).sum() / mask.sum()
    assert result.metrics["kl"] == pytest.approx(float(kl), abs=1e-12)


def _kto_fixed_kl(moved, at, reference, rewards, mask, beta, w_desirable, w_undesirable):
    """The KTO loss at `moved` with the KL estimates of `at` (as backward sees them)."""
    half = len(at) // 2
    clamped = torch.clamp(((at - reference) * mask).sum(dim=-1), min=0)
    kl = [clamped[half:].mean(), clamped[:half].mean()]  # the other half's, per half
    ratio = ((moved - reference) * mask).sum(dim=-1)
    totals = rewards.sum(dim=-1)
    weights = (totals > 0.001) * w_desirable + (totals < -0.001) * w_undesirable
    terms = 0.0
    for side, rows in enumerate((slice(0, half), slice(half, None))):
        z = beta * rewards[rows].mean(dim=-1) * (ratio[rows] - kl[side])
        terms = terms + 0.5 * weights[rows].double().mean() * (1 - torch.sigmoid(z))
    return float(terms.mean())


def test_kto_needs_an_even_micro_batch():
    policy, reference, rewards, mask = kto_inputs(5)
    with pytest.raises(ValueError, match="must be even"):
        kto_loss(policy[:5], reference[:5], rewards[:5], mask[:5], BETA)
