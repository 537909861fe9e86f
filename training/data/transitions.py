"""The typed transition dataset every loader returns, and its validation.

`TransitionDataset.validated` is where every loader ends (`from_arrays` first fills undeclared action bounds
from the env's action space), so a file with missing keys, mismatched lengths, NaN/Inf values or actions
outside the bounds is refused with a message naming the key and row.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np

from training.data.envs import EnvError, env_info

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
BOUNDS_DECLARED = "declared by the dataset"
BOUNDS_INFERRED = "inferred from the data (min/max)"


class DatasetError(ValueError):
    """The dataset file cannot be used; the message names the key/row and the fix."""


class BoundsInferredWarning(UserWarning):
    """Action bounds came from the data: the exported policy will clip to what the data happened to do."""


@dataclass(frozen=True)
class TransitionDataset:
    """Flat (s, a, r, s', done) arrays; `timeouts` marks truncations (bootstrapped, not terminal)."""

    observations: np.ndarray  # [N, S] float32
    actions: np.ndarray  # [N, A] float32
    rewards: np.ndarray  # [N] float32
    next_observations: np.ndarray  # [N, S] float32
    terminals: np.ndarray  # [N] bool
    timeouts: np.ndarray  # [N] bool
    action_low: np.ndarray  # [A] float32
    action_high: np.ndarray  # [A] float32
    name: str = "dataset"
    env_id: str | None = None
    ref_scores: dict[str, float] = field(default_factory=dict)
    env_source: str | None = None  # where env_id came from, e.g. "HDF5 attribute 'env'" or "--env"
    bounds_source: str = BOUNDS_DECLARED  # declared, "action space of <env>", or inferred

    @property
    def size(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_returns(self) -> np.ndarray:
        ends = np.flatnonzero(self.terminals | self.timeouts)
        starts = np.concatenate([[0], ends[:-1] + 1])
        return np.array([self.rewards[s : e + 1].sum() for s, e in zip(starts, ends, strict=True)])

    def fingerprint(self) -> str:
        """sha256 over the arrays, recorded in manifests so a model names the exact data it saw."""
        digest = hashlib.sha256()
        for arr in (self.observations, self.actions, self.rewards, self.next_observations):
            digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update(self.terminals.tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, object]:
        returns = self.episode_returns()
        return {
            "name": self.name,
            "env_id": self.env_id,
            "env_id_source": self.env_source,
            "action_low": [round(float(x), 6) for x in self.action_low],
            "action_high": [round(float(x), 6) for x in self.action_high],
            "action_bounds_source": self.bounds_source,
            "transitions": self.size,
            "episodes": len(returns),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "return_mean": float(returns.mean()) if len(returns) else None,
            "return_min": float(returns.min()) if len(returns) else None,
            "return_max": float(returns.max()) if len(returns) else None,
            "sha256": self.fingerprint(),
        }

    @classmethod
    def validated(
        cls,
        arrays: dict[str, np.ndarray],
        *,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        name: str = "dataset",
        env_id: str | None = None,
        ref_scores: dict[str, float] | None = None,
        source: str = "dataset",
        env_source: str | None = None,
        bounds_source: str = BOUNDS_DECLARED,
        bounds_note: str = " and no env gives them",
    ) -> TransitionDataset:
        obs, nxt, act, rew, term, tout = _checked_columns(arrays, source)
        if action_low is None or action_high is None:
            action_low, action_high = act.min(axis=0), act.max(axis=0)
            bounds_source = BOUNDS_INFERRED
            warnings.warn(
                f"{source}: action bounds are not declared{bounds_note}; using the data's min/max "
                f"{_fmt(action_low)} .. {_fmt(action_high)}, which become the exported policy's clipping "
                "range. Declare action_low/action_high in the file or pass --env",
                BoundsInferredWarning,
                stacklevel=2,
            )
        low, high = _checked_bounds(act, action_low, action_high, bounds_source, source)
        return cls(
            obs,
            act,
            rew,
            nxt,
            term,
            tout,
            low,
            high,
            name,
            env_id,
            dict(ref_scores or {}),
            env_source if env_id else None,
            bounds_source,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_observations": self.next_observations,
            "terminals": self.terminals,
            "timeouts": self.timeouts,
            "action_low": self.action_low,
            "action_high": self.action_high,
        }


def _checked_columns(arrays: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, ...]:
    """(obs, next obs, actions, rewards, terminals, timeouts) as typed 2-D/1-D arrays of one length, all
    finite; next states built from the rows when the file has none. Raises DatasetError naming key and row."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"{source}: missing key(s) {missing}; a dataset needs {list(REQUIRED_KEYS)}")
    obs = np.asarray(arrays["observations"], dtype=np.float32)
    act = np.asarray(arrays["actions"], dtype=np.float32)
    if obs.ndim == 1:
        obs = obs[:, None]
    if act.ndim == 1:
        act = act[:, None]
    n = obs.shape[0]
    rew = np.asarray(arrays["rewards"], dtype=np.float32).reshape(-1)
    term = np.asarray(arrays["terminals"]).astype(bool).reshape(-1)
    tout = np.asarray(arrays["timeouts"]).astype(bool).reshape(-1)
    lengths = {"observations": n, "actions": len(act), "rewards": len(rew), "terminals": len(term)}
    lengths["timeouts"] = len(tout)
    columns = [("observations", obs), ("actions", act), ("rewards", rew)]
    if "next_observations" in arrays:
        nxt = np.asarray(arrays["next_observations"], dtype=np.float32)
        nxt = nxt.reshape(len(nxt), -1)
        lengths["next_observations"] = len(nxt)
        columns.append(("next_observations", nxt))
    for key, length in lengths.items():
        if length != n:
            raise DatasetError(f"{source}: key {key!r} has {length} rows but observations has {n}")
    if n == 0:
        raise DatasetError(f"{source}: no transitions")
    for key, arr in columns:  # rows named as in the file, before any row is dropped
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(f"{source}: key {key!r} has NaN/Inf at row {row}; clean or drop that row")
    if "next_observations" not in arrays:
        obs, nxt, act, rew, term, tout = _shift_next(obs, act, rew, term, tout)
        if len(obs) == 0:
            raise DatasetError(f"{source}: no transition has a next state (every row ends an episode)")
    return obs, nxt, act, rew, term, tout


def _checked_bounds(
    act: np.ndarray, action_low: np.ndarray, action_high: np.ndarray, bounds_source: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """The bounds as float32 [A], refused when misshapen, empty or not holding every action."""
    low = np.asarray(action_low, dtype=np.float32).reshape(-1)
    high = np.asarray(action_high, dtype=np.float32).reshape(-1)
    if low.shape != (act.shape[1],) or high.shape != (act.shape[1],):
        raise DatasetError(f"{source}: action bounds must have {act.shape[1]} entries")
    outside = (act < low - 1e-6) | (act > high + 1e-6)
    if outside.any():
        row, col = (int(x) for x in np.argwhere(outside)[0])
        which = "declared bounds" if bounds_source == BOUNDS_DECLARED else f"bounds ({bounds_source})"
        raise DatasetError(
            f"{source}: key 'actions' row {row} dim {col} = {act[row, col]:.4g} lies outside the "
            f"{which} [{low[col]:.4g}, {high[col]:.4g}]; fix the data or declare the right bounds"
        )
    if np.any(high <= low):
        raise DatasetError(f"{source}: every action_high must be above its action_low (got {low}, {high})")
    return low, high


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(x):.4g}" for x in np.asarray(values).reshape(-1)) + "]"


def _shift_next(
    obs: np.ndarray, act: np.ndarray, rew: np.ndarray, term: np.ndarray, tout: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Next states for a file without `next_observations`, as `d4rl.qlearning_dataset` builds them.

    s'_i = s_{i+1} only holds inside an episode. A time-out row (and a last row that does not terminate)
    has its next state in no row at all, so it is dropped and the row before it becomes the episode's
    truncated end; a terminal row keeps s_{i+1} as a next state that the (1 − done) factor never uses.
    """
    keep = ~tout
    keep[-1] = bool(term[-1])  # the last row has no successor: only a terminal one is usable
    nxt = np.concatenate([obs[1:], obs[-1:]], axis=0)
    # Every dropped row ends an episode; the kept, non-terminal row before it is now that episode's
    # last transition, cut off by the time limit.
    before = np.flatnonzero(~keep) - 1
    before = before[before >= 0]
    truncated = np.zeros(len(obs), dtype=bool)
    truncated[before[keep[before] & ~term[before]]] = True
    return obs[keep], nxt[keep], act[keep], rew[keep], term[keep], truncated[keep]


def env_action_bounds(env_id: str | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(low, high, why-not) from the env's action space; (None, None, reason) when it cannot give them."""
    if not env_id:
        return None, None, " and no env id is known"
    try:
        info = env_info(env_id)
    except EnvError as exc:
        return None, None, f" and env {env_id!r} cannot give them ({exc})"
    if info.action_low is None or info.action_high is None:
        return None, None, f" and env {env_id!r} has an unbounded action space"
    return np.asarray(info.action_low), np.asarray(info.action_high), ""


def from_arrays(
    arrays: dict[str, np.ndarray],
    *,
    action_low: np.ndarray | None,
    action_high: np.ndarray | None,
    name: str,
    env_id: str | None,
    env_source: str | None,
    ref_scores: dict[str, float] | None = None,
    source: str,
) -> TransitionDataset:
    """Resolve undeclared bounds from the env (else `validated` infers them and warns), then validate."""
    bounds_source, note = BOUNDS_DECLARED, ""
    if action_low is None or action_high is None:
        action_low, action_high, note = env_action_bounds(env_id)
        bounds_source = f"action space of {env_id}"
    return TransitionDataset.validated(
        arrays,
        action_low=action_low,
        action_high=action_high,
        name=name,
        env_id=env_id,
        ref_scores=ref_scores,
        source=source,
        env_source=env_source,
        bounds_source=bounds_source,
        bounds_note=note,
    )
