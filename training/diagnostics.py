"""Can this run be trusted before any rollout? The critic against Monte-Carlo returns on held-out episodes.

A held-out slice of whole episodes is never sampled for training. On it, the discounted return-to-go
G_t = Σ_k γ^k r_{t+k} is the critic's target in expectation under the behaviour policy, so the correlation
of Q(s_t, a_t) with G_t says whether the critic ranks actions by their future, and the bias (mean Q − mean
G) whether it over-estimates. An in-support critic (IQL's expectile, QGPO's softmax) should sit at or a
little above G: it estimates the best behaviour action, not the average one.

Only steps whose return-to-go is complete count: those of episodes that terminated, and those of truncated
episodes that lie at least `horizon` steps before the cut (where γ^horizon makes the missing tail small).
Short episodes that time out (Reacher's 50 steps, Pendulum's 200, against 300 at γ = 0.99) leave no such
step, so `return_check` then compares over a shorter horizon instead: the n-step return closed by the
critic's own Q at the dataset's step n later, G_t = Σ_{k<n} γ^k r_{t+k} + γ^n·Q(s_{t+n}, a_{t+n}), with n half
the held-out episodes' median length. That target is partly the critic's own (its γ^n share), so it checks
that Q is consistent with the rewards over n steps, a weaker test than a full return; the summary names
which was used (`critic_check`).

That correlation is across states, and mostly measures V(s). The improvement weights compare actions within
a state, so `advantage_vs_returns` checks that part against the same returns (Hopper medium-expert: corr
0.91, yet the best of 16 policy samples by Q scored 724 against 1727 for one sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CheckMethod = Literal["monte-carlo", "n-step", "none"]
MC_MIN_SHARE = 0.5  # Monte-Carlo returns when at least this share of held-out steps has a complete one
# What `trust_warnings` calls untrustworthy (thresholds in the units the summary prints).
Q_CORR_MIN = 0.3  # critic vs held-out returns, across states
ESS_ACTIONS_MIN = 1.5  # effective actions per support set: below, the weights sit on about one action
DATA_WEIGHT_HIGH = 0.95  # the dataset action's weight: above, improvement is held on the data (≈ BC)
DATA_WEIGHT_LOW = 0.02  # below, every policy sample outranks the data's action (off-support risk)


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


def advantage_vs_returns(q_data: np.ndarray, q_samples: np.ndarray, g: np.ndarray) -> dict[str, float | None]:
    """Does Q rank actions within a state? Q at the dataset action, q_data [N], and at M policy samples of
    the same state, q_samples [N, M], against the dataset action's return G [N].

    The weights softmax(β·Q) over a support set only see how Q orders the actions of one state, which the
    across-state correlation cannot tell (V(s) dominates it). V̂(s) = mean_j Q(s, a_j) is subtracted from
    both Q(s, a_data) and G: a state's value cancels and what is left is the action's part, so
    `adv_mc_corr` = corr(Q − V̂, G − V̂) (None when either side has no spread, e.g. a critic that ignores
    the action). Read it beside `q_mc_corr`: an error of Q shared by a state's actions cancels in Q − V̂
    but stays in G − V̂, diluting the correlation; V̂'s own noise (a mean of M noisy Qs) enters both and
    inflates it a little. `q_data_rank` is the mean fraction of samples ranked below the dataset action
    (ties count half): 0.5 when it looks like a typical policy sample, 1 when Q puts it above every one.
    """
    q_data, q_samples, g = (np.asarray(x, dtype=np.float64) for x in (q_data, q_samples, g))
    if len(q_data) == 0:
        return {"adv_mc_corr": None, "q_data_rank": None}
    v = q_samples.mean(axis=1)
    adv, adv_mc = q_data - v, g - v
    column = q_data[:, None]
    below = (q_samples < column).mean(axis=1) + 0.5 * (q_samples == column).mean(axis=1)
    tiny = 1e-9 * max(1.0, float(np.abs(q_samples).max()), float(np.abs(g).max()))
    flat = len(adv) < 2 or float(np.std(adv)) <= tiny or float(np.std(adv_mc)) <= tiny
    return {
        "adv_mc_corr": None if flat else round(float(np.corrcoef(adv, adv_mc)[0, 1]), 4),
        "q_data_rank": round(float(below.mean()), 4),
    }


@dataclass(frozen=True)
class ReturnCheck:
    """The targets the critic is checked against on held-out steps: G = partial + discount·Q(boot rows).

    `method` monte-carlo: `partial` is the whole discounted return-to-go and `discount` is 0; n-step:
    `partial` sums n rewards and `discount` is γ^n where the episode goes on past t + n (0 where it
    terminated first, so that target is exact)."""

    method: CheckMethod
    horizon: int  # steps of reward in each target (the return-to-go's horizon for monte-carlo)
    rows: np.ndarray  # [K] held-out rows with a target
    partial: np.ndarray  # [K]
    boot_rows: np.ndarray  # [K] the row whose Q(s, a) closes the target (its own row when unused)
    discount: np.ndarray  # [K]

    @property
    def needs_q(self) -> bool:
        return bool(np.any(self.discount > 0))

    def targets(self, q_boot: np.ndarray | None = None) -> np.ndarray:
        """G per row, given Q at `boot_rows` (ignored, and may be None, when nothing is bootstrapped)."""
        if not self.needs_q:
            return self.partial
        assert q_boot is not None, "this check bootstraps: pass Q at boot_rows"
        out: np.ndarray = self.partial + self.discount * np.asarray(q_boot, dtype=np.float64)
        return out

    def describe(self) -> dict[str, Any]:
        """What the summary records: which comparison, over how many steps, and the bootstrap's share."""
        return {
            "method": self.method,
            "horizon": self.horizon,
            "rows": len(self.rows),
            "bootstrapped_rows": int(np.sum(self.discount > 0)),
            "bootstrap_discount": round(float(self.discount.max()), 4) if len(self.rows) else 0.0,
        }


def return_check(
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    held: np.ndarray,
    gamma: float,
    horizon: int,
) -> ReturnCheck:
    """Monte-Carlo returns at `horizon` when at least half of the held-out steps have a complete one
    (long or terminating episodes), else n-step returns bootstrapped with the critic, n = half the median
    held-out episode length (capped at `horizon`), so that about half of every truncated episode counts."""
    g, complete = returns_to_go(rewards, terminals, timeouts, gamma, horizon)
    held = np.asarray(held, dtype=np.int64)
    mc = held[complete[held]]
    if len(held) == 0 or len(mc) >= MC_MIN_SHARE * len(held):
        zeros = np.zeros(len(mc))
        return ReturnCheck("monte-carlo" if len(held) else "none", horizon, mc, g[mc], mc, zeros)
    end, terminated = np.zeros(len(rewards), np.int64), np.zeros(len(rewards), bool)
    lengths = []
    held_set = np.zeros(len(rewards), bool)
    held_set[held] = True
    for start, stop, term in episode_bounds(terminals, timeouts):
        end[start : stop + 1], terminated[start : stop + 1] = stop, term
        if held_set[start]:
            lengths.append(stop - start + 1)
    n = max(1, min(horizon, int(np.median(lengths)) // 2))
    inside = held + n <= end[held]  # the step n later is in the episode: bootstrap there
    exact = ~inside & terminated[held]  # the episode ends first: the n-step return is the whole return
    rows = held[inside | exact]
    later = np.where(inside[inside | exact], rows + n, rows)
    partial = np.where(later != rows, g[rows] - gamma**n * g[np.minimum(later, len(g) - 1)], g[rows])
    discount = np.where(later != rows, gamma**n, 0.0)
    return ReturnCheck("n-step", n, rows, partial, later, discount)


def trust_warnings(
    critic: dict[str, Any] | None, renewals: list[dict[str, Any]], support_size: int, check: dict[str, Any]
) -> list[str]:
    """One line per sign that the run should not be trusted without a rollout, each naming what to try.

    `critic` is the summary's critic block (None when no critic was trained), `renewals` its renewal log,
    `check` the `ReturnCheck.describe()` the critic was compared with."""
    out: list[str] = []
    if critic is None:
        return out
    corr, adv = critic.get("q_mc_corr"), critic.get("adv_mc_corr")
    over = "its n-step returns" if check.get("method") == "n-step" else "returns"
    if check.get("rows", 0) == 0:
        out.append(
            "critic unchecked: no held-out episode to compare it with; set holdout_episodes above 0 "
            "(and give the dataset more than one episode)"
        )
    elif corr is None:
        out.append(f"critic unchecked: Q or the held-out {over} have no spread (a constant critic?)")
    elif corr < Q_CORR_MIN:
        out.append(
            f"critic barely ranks held-out states by {over} (q_mc_corr {corr:.2f} < {Q_CORR_MIN}): "
            "train it longer (critic_steps) or check the rewards"
        )
    if adv is not None and adv <= 0:
        out.append(
            f"critic does not rank a state's actions by their return (adv_mc_corr {adv:.2f} ≤ 0): the "
            "improvement weights follow noise, expect no gain over BC (more critic_steps; a larger "
            "data_anchor keeps the policy near the data)"
        )
    if renewals:
        last = renewals[-1]
        actions = last["ess_fraction"] * (support_size + 1)
        if actions < ESS_ACTIONS_MIN:
            out.append(
                f"improvement weights collapsed: ESS {actions:.2f} of {support_size + 1} actions per state "
                f"at renewal {last['renewal']}; lower beta or use temperature 'ess'"
            )
        weight = last["data_weight"]
        if weight > DATA_WEIGHT_HIGH:
            out.append(
                f"dataset-action weight {weight:.2f} ≈ 1: improvement is held on the data's actions, the "
                "policy stays close to BC; lower data_anchor or raise beta"
            )
        elif weight < DATA_WEIGHT_LOW:
            out.append(
                f"dataset-action weight {weight:.3f} ≈ 0: Q rates every policy sample above the data's "
                "action, the policy may leave the data's support; raise data_anchor"
            )
    return out
