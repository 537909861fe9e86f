"""The critic-vs-return diagnostic on data with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from training.diagnostics import critic_vs_returns, episode_bounds, holdout_split, returns_to_go


def chain_episodes(n_episodes: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chain MDP walked to its end: reward 1 at every step; episodes alternately terminate and time out."""
    rewards = np.ones(n_episodes * length, dtype=np.float32)
    terminals = np.zeros_like(rewards, dtype=bool)
    timeouts = np.zeros_like(terminals)
    for e in range(n_episodes):
        end = (e + 1) * length - 1
        (terminals if e % 2 == 0 else timeouts)[end] = True
    return rewards, terminals, timeouts


def test_returns_to_go_on_a_chain_match_the_closed_form() -> None:
    gamma, length = 0.9, 20
    rewards, terminals, timeouts = chain_episodes(2, length)
    g, complete = returns_to_go(rewards, terminals, timeouts, gamma, horizon=5)
    k = np.arange(length)[::-1] + 1  # steps left including this one
    expected = (1 - gamma**k) / (1 - gamma)
    assert np.allclose(g[:length], expected)
    assert np.allclose(g[length:], expected)
    assert complete[:length].all()  # terminated: every return is exact
    assert complete[length : 2 * length - 5].all() and not complete[2 * length - 5 :].any()


def test_exact_critic_scores_perfect_correlation_and_zero_bias() -> None:
    gamma = 0.95
    rewards, terminals, timeouts = chain_episodes(4, 30)
    g, complete = returns_to_go(rewards, terminals, timeouts, gamma, horizon=10)
    out = critic_vs_returns(g[complete], g[complete])
    assert out["q_mc_corr"] == pytest.approx(1.0)
    assert out["q_mc_bias"] == pytest.approx(0.0)
    shifted = critic_vs_returns(g[complete] + 2.5, g[complete])
    assert shifted["q_mc_bias"] == pytest.approx(2.5)
    noise = critic_vs_returns(np.random.default_rng(0).normal(size=int(complete.sum())), g[complete])
    assert abs(noise["q_mc_corr"] or 0) < 0.3


def test_holdout_takes_whole_episodes() -> None:
    _, terminals, timeouts = chain_episodes(20, 10)
    train, held = holdout_split(terminals, timeouts, 0.1, seed=0)
    assert len(held) == 20 and len(train) == 180
    bounds = episode_bounds(terminals, timeouts)
    held_set = set(held.tolist())
    for start, end, _ in bounds:
        inside = [i in held_set for i in range(start, end + 1)]
        assert all(inside) or not any(inside)
    none_train, none_held = holdout_split(terminals, timeouts, 0.0, seed=0)
    assert len(none_held) == 0 and len(none_train) == 200
