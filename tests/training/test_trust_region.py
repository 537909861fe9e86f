"""The Q-rank anchor (`anchor_gate: rank`): a trust region that never overrules the critic's ranking."""

from __future__ import annotations

from pathlib import Path

import torch

from training.efm import q_weights
from training.trust_region import anchor_weights, ranked_anchor_weights


def _rows(n: int = 64, m1: int = 17, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, m1, generator=gen) * 3
    return q, q_weights(q, 1.5)


def test_weights_sum_to_one_and_keep_the_q_ranking() -> None:
    q, w = _rows()
    out = ranked_anchor_weights(w, q, 0.5)
    torch.testing.assert_close(out.sum(-1), torch.ones(len(q)))
    assert (out > 0).all()
    order = q.argsort(dim=-1)
    sorted_w = out.gather(-1, order)
    assert (sorted_w[:, 1:] >= sorted_w[:, :-1] - 1e-7).all(), "weights must be non-decreasing in Q"


def test_a_best_ranked_dataset_action_keeps_the_full_anchor() -> None:
    q, w = _rows()
    q[:, -1] = q.max(dim=-1).values + 1  # the dataset action above every sample
    w = q_weights(q, 1.5)
    torch.testing.assert_close(ranked_anchor_weights(w, q, 0.5), anchor_weights(w, 0.5))


def test_a_worst_ranked_dataset_action_gains_at_most_the_lowest_samples_weight() -> None:
    q, _ = _rows()
    q[:, -1] = q.min(dim=-1).values - 1  # below every sample: a random action in mixed data
    w = q_weights(q, 1.5)
    out = ranked_anchor_weights(w, q, 0.5)
    lowest_sample = out[:, :-1].min(dim=-1).values
    assert (out[:, -1] <= lowest_sample + 1e-7).all()
    assert (out[:, -1] < 0.5).all()  # the fixed anchor would have given it at least λ


def test_the_anchor_grows_with_the_dataset_actions_rank() -> None:
    base = torch.linspace(-2, 2, 16)
    weights = []
    for rank_q in (-3.0, -0.1, 1.1, 3.0):  # dataset action's Q from worst to best
        q = torch.cat([base, torch.tensor([rank_q])]).unsqueeze(0)
        weights.append(ranked_anchor_weights(q_weights(q, 1.0), q, 0.5)[0, -1].item())
    assert weights == sorted(weights) and weights[-1] > 0.5


def test_zero_anchor_is_the_plain_softmax() -> None:
    q, w = _rows()
    assert torch.equal(ranked_anchor_weights(w, q, 0.0), w)


def test_the_trust_gate_releases_the_anchor_as_the_critic_is_validated() -> None:
    from training.trust_region import trusted_anchor

    assert trusted_anchor(0.5, None, 0.5) == 0.5  # unmeasured: the full anchor holds
    assert trusted_anchor(0.5, -0.2, 0.5) == 0.5  # a ranking worse than chance earns no trust
    assert trusted_anchor(0.5, 0.25, 0.5) == 0.25
    assert trusted_anchor(0.5, 0.9, 0.5) == 0.0


def test_a_trust_gated_run_anchors_each_renewal_by_its_own_check(pendulum_dataset_dir: Path) -> None:
    from tests.conftest import TINY_CONFIG
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer
    from training.trust_region import trusted_anchor

    cfg = QIPOConfig.model_validate(TINY_CONFIG | {"anchor_gate": "trust", "data_anchor": 0.5})
    trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
    trainer.fit()
    assert trainer.renewal_log
    for renewal in trainer.renewal_log:
        expected = trusted_anchor(0.5, renewal["adv_mc_corr"], cfg.trust_corr)
        assert renewal["data_anchor_eff"] == round(expected, 6)


def test_a_probe_resumed_with_another_anchor_uses_it(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    """A run resumed under another `data_anchor` (the improvement probes do this) weights with the new λ."""
    from tests.conftest import TINY_CONFIG
    from training.checkpoint import load_checkpoint
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    data = load_dataset(pendulum_dataset_dir)
    base = QIPOTrainer(data, QIPOConfig.model_validate(TINY_CONFIG | {"data_anchor": 0.5}), progress=False)
    base.fit(until=base.k1 + base.k2)
    base.save(tmp_path / "base")
    probe = QIPOTrainer(data, QIPOConfig.model_validate(TINY_CONFIG | {"data_anchor": 0.0}), progress=False)
    probe.load_state_dict(load_checkpoint(tmp_path / "base"))
    assert probe.anchor_eff == 0.0
