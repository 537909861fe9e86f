"""The critic-vs-return diagnostics on data with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CONFIG
from training.cli import describe_summary
from training.config import QIPOConfig
from training.data import load_dataset
from training.diagnostics import (
    advantage_vs_returns,
    critic_vs_returns,
    episode_bounds,
    holdout_split,
    return_check,
    returns_to_go,
    trust_warnings,
)
from training.metrics import MetricsWriter, plot_learning_curves
from training.qipo import ADVANTAGE_KEYS, QIPOTrainer


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


def within_state_world(n: int = 2000, m: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Q*(s, a) = V(s) − (a − a*(s))²: state values spread far wider (σ 10) than any action's part, the
    dataset action and M policy samples drawn alike around a*, and a return G = Q*(s, a_data) + MC noise."""
    rng = np.random.default_rng(seed)
    v, best = rng.normal(0, 10, n), rng.normal(0, 1, n)
    a_data, a_samples = best + rng.normal(0, 1, n), best[:, None] + rng.normal(0, 1, (n, m))
    return {
        "v": v,
        "part_data": -((a_data - best) ** 2),
        "part_samples": -((a_samples - best[:, None]) ** 2),
        "g": v - (a_data - best) ** 2 + rng.normal(0, 0.3, n),
    }


def test_an_exact_critic_ranks_actions_within_states() -> None:
    w = within_state_world()
    q_data, q_samples = w["v"] + w["part_data"], w["v"][:, None] + w["part_samples"]
    assert advantage_vs_returns(q_data, q_samples, q_data)["adv_mc_corr"] == pytest.approx(1.0)
    noisy = advantage_vs_returns(q_data, q_samples, w["g"])["adv_mc_corr"]
    assert noisy is not None and noisy > 0.9


def test_a_critic_that_ignores_the_action_has_no_advantage_to_correlate() -> None:
    w = within_state_world()
    q_data = w["v"] + 0.1  # any function of the state alone
    out = advantage_vs_returns(q_data, np.repeat(q_data[:, None], 16, axis=1), w["g"])
    assert out["adv_mc_corr"] is None  # no spread, not NaN
    assert out["q_data_rank"] == pytest.approx(0.5)  # ties count half


def test_reversed_ranking_within_states_hides_behind_a_good_across_state_correlation() -> None:
    """Hopper medium-expert in miniature: V right, the action's part backwards."""
    w = within_state_world()
    q_data, q_samples = w["v"] - w["part_data"], w["v"][:, None] - w["part_samples"]
    across = critic_vs_returns(q_data, w["g"])["q_mc_corr"]
    within = advantage_vs_returns(q_data, q_samples, w["g"])["adv_mc_corr"]
    assert across is not None and across > 0.9
    assert within is not None and within < -0.5


def test_q_data_rank_counts_the_samples_below_the_dataset_action() -> None:
    rng = np.random.default_rng(1)
    samples, g = rng.normal(size=(2000, 16)), rng.normal(size=2000)
    assert advantage_vs_returns(samples.max(1) + 1, samples, g)["q_data_rank"] == 1.0
    assert advantage_vs_returns(samples.min(1) - 1, samples, g)["q_data_rank"] == 0.0
    exchangeable = advantage_vs_returns(rng.normal(size=2000), samples, g)["q_data_rank"]
    assert exchangeable == pytest.approx(0.5, abs=0.03)
    assert advantage_vs_returns(np.zeros(0), np.zeros((0, 16)), np.zeros(0))["q_data_rank"] is None


def test_trainer_reports_within_state_ranking_without_touching_training(
    pendulum_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # γ 0.9: Pendulum's 200-step episodes time out, and γ 0.99 would leave no complete held-out return.
    steps = {"behavior_steps": 20, "critic_steps": 10, "improve_steps": 20, "renew_every": 10}
    cfg = QIPOConfig.model_validate(TINY_CONFIG | steps | {"gamma": 0.9, "log_every": 1})

    def trained() -> QIPOTrainer:
        trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
        trainer.fit()
        return trainer

    run = trained()
    assert len(run.adv_index) > 0
    summary = run.summary()
    assert summary["sample_dtype"] in ("float32", "bfloat16")  # what `sample_precision: auto` chose here
    assert 0 <= summary["critic"]["q_data_rank"] <= 1 and summary["critic"]["adv_mc_corr"] is not None
    end_of_critic, first_improve = (
        next(r for r in run.history if r["step"] == step) for step in (run.k1 + run.k2, run.k1 + run.k2 + 1)
    )
    for row in (end_of_critic, first_improve, *run.renewal_log):
        assert all(row[k] is not None for k in ADVANTAGE_KEYS)
    assert any(line.startswith("critic within states") for line in describe_summary(summary))
    with MetricsWriter(tmp_path) as writer:
        for record in run.history:
            writer(record)
    assert plot_learning_curves(tmp_path) is not None

    monkeypatch.setattr(QIPOTrainer, "advantage_diagnostics", lambda self: {})
    without = trained()
    assert all(k not in r for r in without.history for k in ADVANTAGE_KEYS)
    mine, theirs = run.state_dict(), without.state_dict()
    for logs in ("history", "renewal_log"):  # what differs: the diagnostic's own records
        del mine[logs], theirs[logs]
    assert identical(mine, theirs)  # policy, critic, optimisers, generator, support sets: bit for bit


def identical(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(identical, a, b))
    return a == b


# ----- short episodes: the n-step check, and the warnings ---------------------------------------------
def test_short_timed_out_episodes_get_n_step_targets_that_bootstrap_from_q() -> None:
    gamma, length = 0.99, 50
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=4 * length)
    terminals, timeouts = np.zeros(4 * length, bool), np.zeros(4 * length, bool)
    timeouts[length - 1 :: length] = True
    terminals[4 * length - 1], timeouts[4 * length - 1] = True, False  # the last episode terminates
    held = np.arange(4 * length)
    assert returns_to_go(rewards, terminals, timeouts, gamma, 300)[1][: 3 * length].sum() == 0  # MC: blank
    check = return_check(rewards, terminals, timeouts, held, gamma, horizon=300)
    assert check.method == "n-step" and check.horizon == length // 2
    q = rng.normal(size=4 * length)
    targets = dict(zip(check.rows.tolist(), check.targets(q[check.boot_rows]), strict=True))
    n = check.horizon
    for t in range(4 * length):
        end = (t // length + 1) * length - 1
        if t + n <= end:  # bootstrapped n steps later, inside the episode
            expected = sum(gamma**k * rewards[t + k] for k in range(n)) + gamma**n * q[t + n]
            assert targets[t] == pytest.approx(expected)
        elif t >= 3 * length:  # the terminated episode's tail: its whole return, exact
            assert targets[t] == pytest.approx(sum(gamma**k * r for k, r in enumerate(rewards[t : end + 1])))
        else:  # a truncated tail: no target
            assert t not in targets
    assert check.describe() | {"bootstrap_discount": None} == {
        "method": "n-step",
        "horizon": n,
        "rows": 3 * n + length,
        "bootstrapped_rows": 4 * n,
        "bootstrap_discount": None,
    }


def test_long_episodes_keep_monte_carlo_returns() -> None:
    rewards, terminals, timeouts = chain_episodes(4, 400)
    check = return_check(rewards, terminals, timeouts, np.arange(1600), 0.99, horizon=300)
    g, complete = returns_to_go(rewards, terminals, timeouts, 0.99, 300)
    assert check.method == "monte-carlo" and not check.needs_q
    assert np.array_equal(check.rows, np.flatnonzero(complete)) and np.allclose(check.targets(), g[complete])
    empty = return_check(rewards, terminals, timeouts, np.zeros(0, np.int64), 0.99, horizon=300)
    assert empty.method == "none" and len(empty.rows) == 0


def test_the_critic_check_returns_numbers_on_50_step_episodes(tmp_path: Path) -> None:
    """The held-out task that left a user with no diagnostics: Reacher's 50-step episodes at γ 0.99."""
    pytest.importorskip("mujoco", reason="Reacher-v5 needs gymnasium[mujoco]")
    from training.data.reacher import make_reacher_datasets

    path = make_reacher_datasets(tmp_path, ("mixed",), episodes=20, seed=0, progress=False)["mixed"]
    steps = {"behavior_steps": 30, "critic_steps": 60, "improve_steps": 20, "renew_every": 10}
    cfg = QIPOConfig.model_validate(TINY_CONFIG | steps | {"holdout_episodes": 0.2})
    trainer = QIPOTrainer(load_dataset(path), cfg, progress=False)
    trainer.fit()
    summary = trainer.summary()
    assert summary["critic_check"]["method"] == "n-step" and summary["critic_check"]["horizon"] == 25
    assert summary["critic_check"]["rows"] == 4 * 25
    critic = summary["critic"]
    assert all(critic[k] is not None for k in ("q_mc_corr", "q_mc_bias", "adv_mc_corr", "q_data_rank"))
    assert isinstance(summary["warnings"], list)
    lines = describe_summary(summary)
    assert any(line.startswith("critic vs held-out 25-step returns") for line in lines)


def test_warnings_name_what_looks_untrustworthy() -> None:
    check = {"method": "monte-carlo", "horizon": 300, "rows": 500}
    healthy = {"q_mc_corr": 0.9, "adv_mc_corr": 0.3}
    renewal = {"renewal": 3, "ess_fraction": 0.19, "data_weight": 0.53}
    assert trust_warnings(healthy, [renewal], 16, check) == []
    assert trust_warnings(None, [], 16, check) == []  # no critic (BC): nothing to judge
    cases = {
        "q_mc_corr 0.10": ({"q_mc_corr": 0.1, "adv_mc_corr": 0.3}, renewal, check),
        "adv_mc_corr -0.05": ({"q_mc_corr": 0.9, "adv_mc_corr": -0.05}, renewal, check),
        "collapsed": (healthy, renewal | {"ess_fraction": 1.2 / 17}, check),
        "≈ 1": (healthy, renewal | {"data_weight": 0.97}, check),
        "≈ 0": (healthy, renewal | {"data_weight": 0.01}, check),
        "no held-out episode": (healthy, renewal, check | {"rows": 0}),
    }
    for needle, (critic, last, chk) in cases.items():
        found = trust_warnings(critic, [last], 16, chk)
        assert len(found) == 1 and needle in found[0], (needle, found)
    lines = describe_summary({"reward_scale": 1.0, "renewals": [], "warnings": ["w1", "w2"]})
    assert lines == ["warning: w1", "warning: w2"]
