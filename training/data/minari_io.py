"""Write and read local Minari datasets (no download; `create_dataset_from_buffers` needs no jax)."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.dataset import DatasetError, TransitionDataset


@dataclass
class Episode:
    observations: np.ndarray  # [T+1, S]
    actions: np.ndarray  # [T, A]
    rewards: np.ndarray  # [T]
    terminations: np.ndarray  # [T]
    truncations: np.ndarray  # [T]
    seed: int | None = None


def rollout(env: Any, act: Callable[[np.ndarray], Any], seed: int) -> Episode:
    """One whole episode of `env` (reset with `seed`) acting with `act(obs)`, as every generator stores it."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if terminated or truncated:
            break
    return Episode(
        np.asarray(observations, dtype=np.float32),
        np.asarray(actions, dtype=np.float32),
        np.asarray(rewards, dtype=np.float32),
        np.asarray(terms, dtype=bool),
        np.asarray(truncs, dtype=bool),
        seed=seed,
    )


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(
    root: Path,
    dataset_id: str,
    episodes: Sequence[Episode],
    env_id: str,
    *,
    algorithm: str,
    description: str,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
) -> Path:
    """Write `root/<dataset_id>/data`, replacing an older copy; returns the dataset directory."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=ep.observations.astype(np.float32),
            actions=ep.actions.astype(np.float32),
            rewards=ep.rewards.astype(np.float64).tolist(),
            terminations=ep.terminations.astype(bool).tolist(),
            truncations=ep.truncations.astype(bool).tolist(),
        )
        for i, ep in enumerate(episodes)
    ]
    root = root.resolve()  # minari joins relative roots twice
    target = root / dataset_id
    if target.exists():
        shutil.rmtree(target)
    with _minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=gym.make(env_id),
            algorithm_name=algorithm,
            author="qipo-serve",
            description=description,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
        )
    return target


def load_minari(path: Path) -> TransitionDataset:
    """Flatten a Minari dataset directory (the one holding `data/`, or `data/` itself)."""
    from minari.dataset.minari_dataset import MinariDataset

    path = path.resolve()
    data_dir = path / "data" if (path / "data").is_dir() else path
    if not (data_dir / "metadata.json").exists():
        raise DatasetError(f"{path} is not a Minari dataset (no data/metadata.json)")
    ds = MinariDataset(data_dir)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next", "act", "rew", "term", "trunc")}
    for ep in ds.iterate_episodes():
        obs = np.asarray(ep.observations, dtype=np.float32)
        cols["obs"].append(obs[:-1])
        cols["next"].append(obs[1:])
        cols["act"].append(np.asarray(ep.actions, dtype=np.float32).reshape(len(ep.rewards), -1))
        cols["rew"].append(np.asarray(ep.rewards, dtype=np.float32))
        cols["term"].append(np.asarray(ep.terminations, dtype=bool))
        trunc = np.asarray(ep.truncations, dtype=bool).copy()
        trunc[-1] |= not bool(ep.terminations[-1])  # an episode that ends without terminating was cut off
        cols["trunc"].append(trunc)
    space = ds.action_space
    meta = ds.storage.metadata
    refs = {k: float(meta[k]) for k in ("ref_min_score", "ref_max_score") if meta.get(k) is not None}
    env_spec = ds.spec.env_spec
    return TransitionDataset.validated(
        {
            "observations": np.concatenate(cols["obs"]),
            "next_observations": np.concatenate(cols["next"]),
            "actions": np.concatenate(cols["act"]),
            "rewards": np.concatenate(cols["rew"]),
            "terminals": np.concatenate(cols["term"]),
            "timeouts": np.concatenate(cols["trunc"]),
        },
        action_low=np.asarray(getattr(space, "low", None), dtype=np.float32),
        action_high=np.asarray(getattr(space, "high", None), dtype=np.float32),
        name=str(meta.get("dataset_id", path.name)),
        env_id=env_spec.id if env_spec else None,
        ref_scores=refs,
        source=str(path),
    )
