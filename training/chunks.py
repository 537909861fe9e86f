"""Action chunks for training: windows of H actions inside an episode and the
H-step backup of a critic over chunks, Q(s_t, a_{t:t+H}).

A window starting at row t holds the actions a_t..a_{t+H−1} of t's episode and never crosses its end. Its
critic target is Q-chunking's (Li, Zhou & Levine 2025)

    y_t = Σ_{k<n} γ^k r_{t+k} + γ^H·(1 − d)·V(s_{t+H}),

an unbiased H-step backup because the whole chunk is executed open-loop: no action inside the window is
chosen by a policy other than the one that recorded it, so no off-policy correction is needed.

The tail (windows starting in the last H − 1 steps of an episode) is handled by how the episode ended:
- it *terminated*: the window is kept and padded by repeating the last executed action; `mask` marks the
  padding. The padded actions are never executed (the episode is over), so the target, the n = end − t + 1
  rewards up to the terminal and no bootstrap, is the exact return of every chunk that starts with the
  executed prefix. Dropping these windows would remove the states just before a fall, where Q must learn
  that the episode ends. The flow trains on the padded chunk as it is (the mask is not applied to its
  loss): holding the last action is an in-support continuation, and a masked loss would leave those
  dimensions without any target at exactly the states where the policy then has to emit them.
- it was *truncated* (timeout, or the data simply stops): the window is dropped. After the cut the chunk's
  remaining actions were never recorded and the states they lead to never seen; a shorter bootstrap
  γ^n·V(s_{t+n}) would be the value of executing n actions and then the policy, not of the chunk the critic
  is asked about, so any target would be biased. The rows still serve as s_{t+H} of earlier windows.
With H = 1 every row is a window of its own transition, and the arrays equal the transitions' (r, d, s').
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from training.diagnostics import ReturnCheck, episode_bounds


@dataclass(frozen=True)
class ChunkWindows:
    """One window per dataset row t (`valid` says which can be trained on).

    `action_rows` [N, H]: dataset rows of the window's actions (padding repeats the last executed row);
    `mask` [N, H]: True where the action is executed in the data; `rewards` [N]: Σ_{k<n} γ^k r_{t+k} over
    the n executed steps; `dones` [N]: a terminal lies inside the window (no bootstrap); `next_rows` [N]: the
    row whose next observation is the bootstrap state s_{t+H} (t + H − 1 for a full window); `discount` is
    γ^H, the critic's discount on V(s_{t+H}).
    """

    horizon: int
    action_rows: np.ndarray
    mask: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    next_rows: np.ndarray
    valid: np.ndarray
    discount: float

    @property
    def rows(self) -> np.ndarray:
        """The rows that start a usable window, ascending."""
        return np.flatnonzero(self.valid)


def chunk_windows(
    rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray, horizon: int, gamma: float
) -> ChunkWindows:
    """Windows of `horizon` actions for every row of a flat, episode-ordered dataset (module docstring)."""
    if horizon < 1:
        raise ValueError(f"action_horizon must be at least 1, got {horizon}")
    n = len(rewards)
    end = np.empty(n, dtype=np.int64)
    terminated = np.empty(n, dtype=bool)
    for start, stop, term in episode_bounds(terminals, timeouts):
        end[start : stop + 1], terminated[start : stop + 1] = stop, term
    t = np.arange(n)
    offsets = np.arange(horizon)
    steps = np.minimum(horizon, end - t + 1)  # executed actions in each window
    mask = offsets[None, :] < steps[:, None]
    action_rows = t[:, None] + np.minimum(offsets[None, :], steps[:, None] - 1)
    weights = np.where(mask, float(gamma) ** offsets[None, :], 0.0)
    reward_sum = (weights * np.asarray(rewards, dtype=np.float64)[action_rows]).sum(axis=1)
    full = steps == horizon
    dones = terminated & (t + steps - 1 == end)  # the window reaches its episode's terminal
    return ChunkWindows(
        horizon=horizon,
        action_rows=action_rows,
        mask=mask,
        rewards=reward_sum.astype(np.float32),
        dones=dones,
        next_rows=t + steps - 1,
        valid=full | dones,
        discount=float(gamma) ** horizon,
    )


def windowed_next_rows(
    observations: np.ndarray, next_states: np.ndarray, shift: int
) -> tuple[np.ndarray, np.ndarray]:
    """(next_index [N], extra [E]): the bootstrap state of window i, `next_states[i]`, is row next_index[i]
    of concat(observations, next_states[extra]) — usually the dataset state `shift` rows later, so the
    behaviour samples a softmax-Q critic needs there are drawn once per distinct state."""
    n = observations.shape[0]
    follows = np.zeros(n, dtype=bool)
    if shift < n:
        follows[: n - shift] = np.all(next_states[: n - shift] == observations[shift:], axis=1)
    extra = np.flatnonzero(~follows)
    index = np.arange(shift, n + shift)
    index[extra] = n + np.arange(len(extra))
    return index, extra


def restrict_check(check: ReturnCheck, valid: np.ndarray) -> ReturnCheck:
    """The held-out targets whose row, and bootstrap row, start a usable window: the critic is asked
    about chunks only where the data has one."""
    keep = valid[check.rows] & valid[check.boot_rows]
    if bool(keep.all()):
        return check
    return replace(
        check,
        rows=check.rows[keep],
        partial=check.partial[keep],
        boot_rows=check.boot_rows[keep],
        discount=check.discount[keep],
    )
