"""One typed transition dataset, and one loader for Minari directories, D4RL-style HDF5 and `.npz` files.

Every loader ends in `TransitionDataset.validated`, so a file with missing keys, mismatched lengths,
NaN/Inf values or actions outside the declared bounds is refused with a message naming the key and row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(ValueError):
    """The dataset file cannot be used; the message names the key/row and the fix."""


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
        if "next_observations" in arrays:
            nxt = np.asarray(arrays["next_observations"], dtype=np.float32).reshape(obs.shape[0], -1)
        else:  # D4RL files without next_observations: shift, and drop the last row of each episode
            nxt = np.concatenate([obs[1:], obs[-1:]], axis=0)
        lengths = {"observations": n, "actions": len(act), "rewards": len(rew), "terminals": len(term)}
        lengths |= {"timeouts": len(tout), "next_observations": len(nxt)}
        for key, length in lengths.items():
            if length != n:
                raise DatasetError(f"{source}: key {key!r} has {length} rows but observations has {n}")
        if n == 0:
            raise DatasetError(f"{source}: no transitions")
        for key, arr in (
            ("observations", obs),
            ("actions", act),
            ("rewards", rew),
            ("next_observations", nxt),
        ):
            bad = ~np.isfinite(arr)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetError(f"{source}: key {key!r} has NaN/Inf at row {row}; clean or drop that row")
        low = np.asarray(action_low if action_low is not None else act.min(axis=0), dtype=np.float32)
        high = np.asarray(action_high if action_high is not None else act.max(axis=0), dtype=np.float32)
        if low.shape != (act.shape[1],) or high.shape != (act.shape[1],):
            raise DatasetError(f"{source}: action bounds must have {act.shape[1]} entries")
        outside = (act < low - 1e-6) | (act > high + 1e-6)
        if outside.any():
            row, col = (int(x) for x in np.argwhere(outside)[0])
            raise DatasetError(
                f"{source}: key 'actions' row {row} dim {col} = {act[row, col]:.4g} lies outside the "
                f"declared bounds [{low[col]:.4g}, {high[col]:.4g}]; fix the data or declare the right bounds"
            )
        if np.any(high <= low):
            raise DatasetError(
                f"{source}: every action_high must be above its action_low (got {low}, {high})"
            )
        return cls(obs, act, rew, nxt, term, tout, low, high, name, env_id, dict(ref_scores or {}))

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


def load_dataset(path: Path | str) -> TransitionDataset:
    """Minari dataset directory, D4RL-style `.hdf5`/`.h5`, or `.npz`: chosen by what `path` is."""
    path = Path(path)
    if path.is_dir():
        from training.data.minari_io import load_minari

        return load_minari(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist; make one with `qipo data make` or pass an existing file")
    if path.suffix in (".hdf5", ".h5"):
        return _load_hdf5(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    raise DatasetError(f"{path}: unknown format; use a Minari directory, .hdf5/.h5 or .npz")


def _bounds(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    return arrays.get("action_low"), arrays.get("action_high")


def _load_npz(path: Path) -> TransitionDataset:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    low, high = _bounds(arrays)
    meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    return TransitionDataset.validated(
        arrays,
        action_low=low,
        action_high=high,
        name=meta.get("name", path.stem),
        env_id=meta.get("env_id"),
        ref_scores=meta.get("ref_scores"),
        source=str(path),
    )


def _load_hdf5(path: Path) -> TransitionDataset:
    import h5py

    with h5py.File(path, "r") as fh:
        arrays = {k: fh[k][()] for k in fh if isinstance(fh[k], h5py.Dataset)}
        attrs = dict(fh.attrs)
    low, high = _bounds(arrays)
    return TransitionDataset.validated(
        arrays,
        action_low=low,
        action_high=high,
        name=str(attrs.get("name", path.stem)),
        env_id=str(attrs["env_id"]) if "env_id" in attrs else None,
        source=str(path),
    )


def save_npz(dataset: TransitionDataset, path: Path) -> Path:
    meta = json.dumps({"name": dataset.name, "env_id": dataset.env_id, "ref_scores": dataset.ref_scores})
    np.savez_compressed(path, meta=np.array(meta), **dataset.to_arrays())  # type: ignore[arg-type]
    return path
