"""Critic targets against hand-computed values, and the Bellman fixed point of a tiny MDP."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from training.critic import IQLCritic, SoftmaxQCritic, expectile_loss, softmax_q_target
from training.networks import TwinQ


class KnownTwin(nn.Module):
    """Q1(s, a) = s[0] + a[0], Q2 = Q1 + 1 (so the min picks Q1)."""

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        q = s[:, 0] + a[:, 0]
        return q, q + 1.0

    def q_min(self, s: Tensor, a: Tensor) -> Tensor:
        q1, q2 = self.forward(s, a)
        return torch.minimum(q1, q2)


def softmax_critic(gamma: float = 0.9, beta_q: float = 1.0) -> SoftmaxQCritic:
    return SoftmaxQCritic(TwinQ(1, 1, 8, 1), gamma=gamma, tau=0.005, beta_q=beta_q, lr=1e-3)


def test_softmax_target_matches_hand_computation() -> None:
    critic = softmax_critic(gamma=0.9, beta_q=1.0)
    critic.q_target = KnownTwin()  # type: ignore[assignment]
    # One transition: r = 1, s' = 0.5, behaviour samples at s' = {0, 1} → Q'(s', a_j) = {0.5, 1.5}.
    r, d = torch.tensor([1.0]), torch.tensor([0.0])
    s_next = torch.tensor([[0.5]])
    a_next = torch.tensor([[[0.0], [1.0]]])
    e1, e2 = math.exp(0.5), math.exp(1.5)
    soft_value = (e1 * 0.5 + e2 * 1.5) / (e1 + e2)
    assert critic.target(r, d, s_next, a_next).item() == pytest.approx(1.0 + 0.9 * soft_value, rel=1e-6)
    # A terminal transition does not bootstrap.
    assert critic.target(r, torch.tensor([1.0]), s_next, a_next).item() == pytest.approx(1.0)


def test_softmax_target_interpolates_mean_and_max() -> None:
    next_q = torch.tensor([[0.0, 1.0, 4.0]])
    zero = torch.zeros(1)
    assert softmax_q_target(zero, zero, next_q, 1.0, 0.0).item() == pytest.approx(5 / 3)  # β_Q = 0: mean
    assert softmax_q_target(zero, zero, next_q, 1.0, 100.0).item() == pytest.approx(4.0)  # β_Q → ∞: max


def test_softmax_critic_reaches_the_bellman_fixed_point() -> None:
    """One state, one action, reward 1, γ = 0.5, no termination: Q* = 1 / (1 − γ) = 2."""
    torch.manual_seed(0)
    critic = SoftmaxQCritic(TwinQ(1, 1, 16, 2), gamma=0.5, tau=0.2, beta_q=1.0, lr=1e-2)
    s = torch.zeros(32, 1)
    a = torch.zeros(32, 1)
    r, d = torch.ones(32), torch.zeros(32)
    for _ in range(600):
        critic.update(s, a, r, d, s, a.unsqueeze(1))
    assert critic.q.q_min(s[:1], a[:1]).item() == pytest.approx(2.0, abs=0.05)


def test_expectile_loss_by_hand() -> None:
    diff = torch.tensor([1.0, -1.0, 2.0])
    # 0.7·1 + 0.3·1 + 0.7·4 over 3
    assert expectile_loss(diff, 0.7).item() == pytest.approx((0.7 + 0.3 + 2.8) / 3)


def test_iql_target_and_value_expectile() -> None:
    """V converges to the τ-expectile of Q at dataset actions: Q ∈ {0, 1} equally often → V = τ."""
    torch.manual_seed(0)
    critic = IQLCritic(
        TwinQ(1, 1, 8, 1), obs_dim=1, hidden=16, layers=2, gamma=0.9, tau=0.005, expectile=0.7, lr=1e-2
    )
    critic.q_target = KnownTwin()  # type: ignore[assignment]
    s = torch.zeros(64, 1)
    a = torch.cat([torch.zeros(32, 1), torch.ones(32, 1)])  # Q'(0, a) = a
    for _ in range(800):
        critic.update_value(s, a)
    v = critic.value(s[:1]).item()
    assert v == pytest.approx(0.7, abs=0.03)
    target = critic.target(torch.tensor([2.0]), torch.tensor([0.0]), s[:1])
    assert target.item() == pytest.approx(2.0 + 0.9 * v, rel=1e-5)
    assert critic.target(torch.tensor([2.0]), torch.tensor([1.0]), s[:1]).item() == pytest.approx(2.0)


def test_critic_state_roundtrip() -> None:
    critic = IQLCritic(
        TwinQ(1, 1, 8, 1), obs_dim=1, hidden=8, layers=1, gamma=0.9, tau=0.005, expectile=0.7, lr=1e-3
    )
    state = critic.state_dict()
    other = IQLCritic(
        TwinQ(1, 1, 8, 1), obs_dim=1, hidden=8, layers=1, gamma=0.9, tau=0.005, expectile=0.7, lr=1e-3
    )
    other.load_state_dict(state)
    x = torch.randn(4, 1)
    assert torch.equal(other.value(x), critic.value(x))
    assert torch.equal(other.q.q_min(x, x), critic.q.q_min(x, x))
