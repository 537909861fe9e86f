"""The EFM weighting and loss, and QIPO's per-state support-set weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.efm import energy_weights, q_weights, weighted_matching_loss


def test_batch_weights_sum_to_one() -> None:
    energy = torch.randn(128) * 5
    for beta in (0.0, 1.0, 3.0, 10.0):
        w = energy_weights(energy, beta, dim=0)
        assert w.shape == (128,)
        assert torch.all(w >= 0)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_weights_favour_low_energy_more_as_beta_grows() -> None:
    energy = torch.tensor([0.0, 1.0, 2.0])
    w1, w10 = energy_weights(energy, 1.0, 0), energy_weights(energy, 10.0, 0)
    assert w1[0] < w10[0] and w10[0] > 0.99


def test_loss_is_plain_cfm_at_beta_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(64, 3, generator=gen), torch.randn(64, 3, generator=gen)
    energy = torch.randn(64, generator=gen)
    plain = ((pred - target) ** 2).sum(-1).mean()
    efm = weighted_matching_loss(pred, target, energy_weights(energy, 0.0, dim=0))
    assert efm.item() == pytest.approx(plain.item(), rel=1e-6)
    assert weighted_matching_loss(pred, target).item() == pytest.approx(plain.item(), rel=1e-6)
    # And per-state weights [B, M] at β = 0 are the plain mean over all (state, action) pairs.
    per_state = weighted_matching_loss(
        pred.view(16, 4, 3), target.view(16, 4, 3), q_weights(energy.view(16, 4), 0.0)
    )
    assert per_state.item() == pytest.approx(plain.item(), rel=1e-6)


def test_weighted_loss_is_sum_of_weighted_errors() -> None:
    pred = torch.tensor([[1.0], [0.0]])
    target = torch.zeros(2, 1)
    w = torch.tensor([0.25, 0.75])
    assert weighted_matching_loss(pred, target, w).item() == pytest.approx(0.25)


def test_weights_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="weights shape"):
        weighted_matching_loss(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(3))


def test_support_set_includes_dataset_action_and_rows_sum_to_one(
    pendulum_dataset_dir: Path,
) -> None:
    from tests.conftest import TINY_CONFIG
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    cfg = QIPOConfig.model_validate(
        TINY_CONFIG | {"behavior_steps": 20, "critic_steps": 10, "renewal": "eager", "temperature": "raw"}
    )
    trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
    trainer.fit(until=cfg.behavior_steps + cfg.critic_steps)
    trainer.renew_support()
    assert trainer.supports is not None and bool(trainer.supports.filled.all())
    support = trainer.supports.actions(torch.arange(trainer.dataset.size))
    n, m1, a = support.shape
    assert (n, m1, a) == (trainer.dataset.size, cfg.support_size + 1, trainer.dataset.act_dim)
    assert torch.equal(support[:, -1], trainer.a)  # the dataset action is always in the set
    weights = trainer.support_weights(torch.arange(n))
    assert torch.allclose(weights.sum(-1), torch.ones(n), atol=1e-5)
    s_rep = trainer.s.unsqueeze(1).expand(n, m1, -1).reshape(n * m1, -1)
    with torch.no_grad():
        q = trainer.critic.q.q_min(s_rep, support.reshape(n * m1, a)).reshape(n, m1)
    # The weights are (1 − λ)·softmax(β·Q) of exactly those actions, plus λ on the dataset action.
    expected = (1 - cfg.data_anchor) * torch.softmax(cfg.beta * q, -1)
    expected[:, -1] += cfg.data_anchor
    assert torch.allclose(weights, expected, atol=1e-5)
