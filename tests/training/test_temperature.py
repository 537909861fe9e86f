"""Weight sharpness: ESS, the scale-free temperature modes, and lazy = eager renewal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.efm import q_weights
from training.temperature import beta_for_ess, effective_beta, effective_sample_size, weight_stats


def test_ess_of_uniform_weights_is_the_set_size() -> None:
    m1 = 17
    w = torch.full((5, m1), 1.0 / m1)
    assert torch.allclose(effective_sample_size(w), torch.full((5,), float(m1)))
    assert weight_stats(w)["ess_fraction"] == pytest.approx(1.0)
    assert weight_stats(w)["data_weight"] == pytest.approx(1.0 / m1, abs=1e-4)


def test_ess_of_an_argmax_is_one() -> None:
    w = torch.zeros(3, 9)
    w[:, 4] = 1.0
    assert torch.allclose(effective_sample_size(w), torch.ones(3))


@pytest.mark.parametrize("mode", ["spread", "ess"])
def test_scale_free_modes_give_the_same_weights_when_rewards_are_scaled(mode: str) -> None:
    """Q of a fixed policy is linear in the rewards: scaling every reward by c scales Q by c."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(256, 17, generator=gen) * 3 + 10
    w = {}
    for c in (1.0, 0.01, 250.0):
        beta = effective_beta(c * q, mode, 3.0, 0.25)  # type: ignore[arg-type]
        w[c] = q_weights(c * q, beta)
    assert torch.allclose(w[1.0], w[0.01], atol=1e-5)
    assert torch.allclose(w[1.0], w[250.0], atol=1e-5)
    # The raw mode is the paper's and is not scale-free.
    raw = [q_weights(c * q, effective_beta(c * q, "raw", 3.0, 0.25)) for c in (1.0, 0.01)]
    assert not torch.allclose(raw[0], raw[1], atol=1e-3)


def test_data_anchor_keeps_rows_normalised_and_floors_the_dataset_action() -> None:
    from training.trust_region import anchor_weights

    gen = torch.Generator().manual_seed(1)
    w = q_weights(torch.randn(64, 17, generator=gen) * 5, 1.0)
    anchored = anchor_weights(w, 0.3)
    assert torch.allclose(anchored.sum(-1), torch.ones(64))
    assert bool((anchored[:, -1] >= 0.3).all())
    # The policy's samples keep their relative weights: the Q-ranking is untouched.
    assert torch.allclose(anchored[:, :-1] / 0.7, w[:, :-1])
    assert anchor_weights(w, 0.0) is w


def test_advantage_gate_anchors_only_dataset_actions_the_critic_rates_at_least_average() -> None:
    from training.trust_region import advantage_gate, anchor_weights

    q = torch.tensor([[0.0, 2.0, 1.5], [0.0, 2.0, 0.5], [1.0, 1.0, 1.0]])  # data action last: 1.5, 0.5, 1.0
    gate = advantage_gate(q)
    assert gate.squeeze(-1).tolist() == [1.0, 0.0, 1.0]  # above, below and equal to the samples' mean (1.0)
    w = q_weights(q, 1.0)
    anchored = anchor_weights(w, 0.4, gate)
    assert torch.allclose(anchored.sum(-1), torch.ones(3))
    assert torch.allclose(anchored[1], w[1])  # the poor dataset action is not held onto
    assert bool((anchored[[0, 2], -1] >= 0.4).all())


def test_ess_mode_hits_its_target() -> None:
    q = torch.randn(512, 17, generator=torch.Generator().manual_seed(1))
    for target in (0.1, 0.25, 0.6):
        beta = beta_for_ess(q, target)
        got = float(effective_sample_size(q_weights(q, beta)).mean()) / 17
        assert got == pytest.approx(target, abs=1e-3)


def test_ess_mode_with_flat_q_keeps_uniform_weights() -> None:
    assert beta_for_ess(torch.ones(4, 5), 0.25) == 0.0


@pytest.mark.parametrize("critic_kind", ["softmax-q", "iql"])
def test_lazy_renewal_builds_the_same_support_sets_as_eager(
    pendulum_dataset_dir: Path, critic_kind: str
) -> None:
    """Same seed, same steps: lazy sets drawn on first use equal the eager sets drawn all at once, at
    every renewal, and so do the weights and the trained policy."""
    from tests.conftest import TINY_CONFIG
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    data = load_dataset(pendulum_dataset_dir)
    base = TINY_CONFIG | {"critic_kind": critic_kind, "improve_steps": 40, "renew_every": 20}
    lazy = QIPOTrainer(data, QIPOConfig.model_validate(base | {"renewal": "lazy"}), progress=False)
    eager = QIPOTrainer(data, QIPOConfig.model_validate(base | {"renewal": "eager"}), progress=False)
    k12 = lazy.k1 + lazy.k2
    for until in (k12 + 1, k12 + 20, k12 + 21, k12 + 40):
        lazy.fit(until=until)
        eager.fit(until=until)
        assert lazy.supports is not None and eager.supports is not None
        assert bool(eager.supports.filled.all())
        touched = lazy.supports.rows()
        assert 0 < len(touched) < data.size  # lazy drew only what the batches needed
        # GEMMs of different batch sizes may round differently in the last bits.
        assert torch.allclose(lazy.supports.actions(touched), eager.supports.actions(touched), atol=1e-5)
        assert torch.allclose(lazy.supports.q(touched), eager.supports.q(touched), atol=1e-5)
        assert lazy.beta_eff == pytest.approx(eager.beta_eff, rel=1e-5)
    for p_lazy, p_eager in zip(lazy.net.parameters(), eager.net.parameters(), strict=True):
        assert torch.allclose(p_lazy, p_eager, atol=1e-4)
    assert [r["renewal"] for r in lazy.renewal_log] == [0, 1]


def test_lazy_renewal_resumes_exactly(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import TINY_CONFIG
    from training.checkpoint import load_checkpoint
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    data = load_dataset(pendulum_dataset_dir)
    cfg = QIPOConfig.model_validate(TINY_CONFIG)
    whole = QIPOTrainer(data, cfg, progress=False)
    whole.fit()
    part = QIPOTrainer(data, cfg, progress=False)
    part.fit(until=whole.k1 + whole.k2 + 45)  # mid renewal period: some sets drawn, some not
    part.save(tmp_path)
    resumed = QIPOTrainer(data, cfg, progress=False)
    resumed.load_state_dict(load_checkpoint(tmp_path))
    resumed.fit()
    for a, b in zip(whole.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert np.isfinite(whole.renewal_log[-1]["beta_eff"])
