"""Can this run be trusted before any rollout? The critic against Monte-Carlo returns on held-out episodes.

A held-out slice of whole episodes is never sampled for training. On it, the discounted return-to-go
G_t = Σ_k γ^k r_{t+k} is the critic's target in expectation under the behaviour policy, so the correlation
of Q(s_t, a_t) with G_t says whether the critic ranks actions by their future, and the bias (mean Q − mean
G) whether it over-estimates. An in-support critic (IQL's expectile, QGPO's softmax) should sit at or a
little above G: it estimates the best behaviour action, not the average one.

Only steps whose return-to-go is complete count: those of episodes that terminated, and those of truncated
episodes that lie at least `horizon` steps before the cut (where γ^horizon makes the missing tail small).
"""

from __future__ import annotations

import numpy as np


def episode_bounds(terminals: np.ndarray, timeouts: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end inclusive, terminated) of every episode, in row order; a trailing unflagged run counts
    as truncated."""
    flags = terminals | timeouts
    ends = [int(e) for e in np.flatnonzero(flags)]
    n = len(flags)
    if not ends or ends[-1] != n - 1:
        ends.append(n - 1)
    out, start = [], 0
    for end in ends:
        out.append((start, int(end), bool(terminals[end])))
        start = int(end) + 1
    return out


def holdout_split(
    terminals: np.ndarray, timeouts: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): a random `fraction` of whole episodes (at least one when > 0, never
    all of them) is held out."""
    n = len(terminals)
    bounds = episode_bounds(terminals, timeouts)
    k = 0 if fraction <= 0 or len(bounds) < 2 else min(len(bounds) - 1, max(1, round(fraction * len(bounds))))
    rng = np.random.default_rng(seed + 104_729)
    held = set(rng.choice(len(bounds), size=k, replace=False).tolist()) if k else set()
    mask = np.zeros(n, dtype=bool)
    for i in held:
        start, end, _ = bounds[i]
        mask[start : end + 1] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def returns_to_go(
    rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, gamma: float, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """(G [N], complete [N] bool): discounted return-to-go per row within its episode, and whether it is
    complete (the episode terminated, or the cut lies at least `horizon` steps ahead)."""
    g = np.zeros(len(rewards), dtype=np.float64)
    complete = np.zeros(len(rewards), dtype=bool)
    for start, end, terminated in episode_bounds(terminals, timeouts):
        acc = 0.0
        for t in range(end, start - 1, -1):
            acc = float(rewards[t]) + gamma * acc
            g[t] = acc
        complete[start : end + 1] = True if terminated else np.arange(start, end + 1) <= end - horizon
    return g, complete


def critic_vs_returns(q: np.ndarray, g: np.ndarray) -> dict[str, float | int | None]:
    """Pearson correlation and bias of Q against G over the rows given."""
    if len(q) < 2 or float(np.std(q)) == 0 or float(np.std(g)) == 0:
        return {"q_mc_corr": None, "q_mc_bias": None, "q_mc_rows": len(q)}
    return {
        "q_mc_corr": round(float(np.corrcoef(q, g)[0, 1]), 4),
        "q_mc_bias": round(float(np.mean(q) - np.mean(g)), 4),
        "q_mc_rows": len(q),
    }
