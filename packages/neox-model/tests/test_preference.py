"""DPO and reward-model losses against references written here from their papers' formulas, in
float64 one pair at a time (TRL's own code is compared in the repository's tests/)."""

import math

import pytest
import torch

from neox_model.preference import (
    dpo_loss,
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
