"""One typed transition dataset, and one loader for Minari datasets (by directory or by id from the local
Minari cache), D4RL-style HDF5 and `.npz` files.

The dataset contract (docs/training.md#datasets): the env id comes from `--env`, else the file (HDF5 attribute
`env_id`, `env` or `env_name`; Minari's env spec; the `.npz` `meta` JSON); action bounds are the ones the
file declares, else the env's action space, else the data's min/max with a warning, because they become the
exported policy's clipping range. Every loader ends in `TransitionDataset.validated`, so a file with
missing keys, mismatched lengths, NaN/Inf values or actions outside the bounds is refused with a message
naming the key and row.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
ENV_ATTRS = ("env_id", "env", "env_name")  # where D4RL-style files and our npz `meta` name the env
BOUNDS_DECLARED = "declared by the dataset"
BOUNDS_INFERRED = "inferred from the data (min/max)"
# A Minari dataset id: `namespace/name-vN` (e.g. `mujoco/hopper/medium-v0`), resolved in the local cache.
MINARI_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+$")


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
            raise DatasetError(
                f"{source}: every action_high must be above its action_low (got {low}, {high})"
            )
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


def load_dataset(path: Path | str, env_id: str | None = None) -> TransitionDataset:
    """Load a dataset by what `path` is: a Minari dataset directory, a Minari id in the local Minari cache
    (`mujoco/hopper/medium-v0`), a D4RL-style `.hdf5`/`.h5`, or an `.npz`. `env_id` overrides the env id the
    file records (and supplies undeclared action bounds from the env's action space)."""
    text = str(path)
    path = Path(path)
    if path.is_dir():
        from training.data.minari_io import load_minari

        return load_minari(path, env_id)
    if not path.exists():
        if path.suffix not in (".hdf5", ".h5", ".npz") and MINARI_ID.match(text):
            from training.data.minari_io import load_minari_id

            return load_minari_id(text, env_id)
        raise DatasetError(
            f"{path} does not exist; pass an existing .hdf5/.h5/.npz file, a Minari dataset directory or the "
            "id of a Minari dataset in the local cache, or make one with `qipo data make`"
        )
    if path.suffix in (".hdf5", ".h5"):
        arrays, meta, env_source = _read_hdf5(path)
    elif path.suffix == ".npz":
        arrays, meta, env_source = _read_npz(path)
    else:
        raise DatasetError(f"{path}: unknown format; use a Minari directory or id, .hdf5/.h5 or .npz")
    found = next((str(meta[k]) for k in ENV_ATTRS if meta.get(k)), None)
    if env_id:
        found, env_source = env_id, "--env"
    return from_arrays(
        arrays,
        action_low=arrays.get("action_low"),
        action_high=arrays.get("action_high"),
        name=str(meta.get("name") or path.stem),
        env_id=found,
        env_source=env_source if found else None,
        ref_scores=meta.get("ref_scores"),
        source=str(path),
    )


def env_action_bounds(env_id: str | None) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(low, high, why-not) from the env's action space; (None, None, reason) when it cannot give them."""
    if not env_id:
        return None, None, " and no env id is known"
    from training.envs import EnvError, env_info

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


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    try:
        meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    except ValueError as exc:
        raise DatasetError(f"{path}: key 'meta' is not a JSON object ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f'{path}: key \'meta\' must hold a JSON object, e.g. {{"env_id": "Reacher-v5"}}')
    key = next((k for k in ENV_ATTRS if meta.get(k)), None)
    return arrays, meta, f"npz meta {key!r}"


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            arrays = {k: fh[k][()] for k in fh if isinstance(fh[k], h5py.Dataset)}
            attrs = {k: _attr(v) for k, v in fh.attrs.items()}
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from exc
    for key in ("action_low", "action_high"):  # bounds may also be declared as file attributes
        if key not in arrays and key in attrs:
            arrays[key] = np.asarray(attrs[key], dtype=np.float32).reshape(-1)
    env_key = next((k for k in ENV_ATTRS if attrs.get(k)), None)
    return arrays, attrs, f"HDF5 attribute {env_key!r}"


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    return value


def save_npz(dataset: TransitionDataset, path: Path) -> Path:
    meta = json.dumps({"name": dataset.name, "env_id": dataset.env_id, "ref_scores": dataset.ref_scores})
    np.savez_compressed(path, meta=np.array(meta), **dataset.to_arrays())  # type: ignore[arg-type]
    return path
