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

from training.data.transitions import DatasetError, TransitionDataset, from_arrays


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


def load_minari(path: Path, env_id: str | None = None) -> TransitionDataset:
    """Flatten a Minari dataset directory (the one holding `data/`, or `data/` itself)."""
    from minari.dataset.minari_dataset import MinariDataset

    path = path.resolve()
    data_dir = path / "data" if (path / "data").is_dir() else path
    if not (data_dir / "metadata.json").exists():
        raise DatasetError(f"{path} is not a Minari dataset (no data/metadata.json)")
    return flatten_minari(MinariDataset(data_dir), str(path), path.name, env_id)


def load_minari_id(dataset_id: str, env_id: str | None = None) -> TransitionDataset:
    """A Minari dataset by id from the local cache (`MINARI_DATASETS_PATH`, default ~/.minari/datasets).

    Nothing is downloaded: training reads only what is on disk, so the error says how to fetch it.
    """
    try:
        import minari
    except ImportError as exc:
        raise DatasetError(
            f"{dataset_id!r} looks like a Minari dataset id, but minari is not installed: "
            "pip install -e '.[train]'"
        ) from exc
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        ds = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} is not in the local cache ({get_dataset_path(dataset_id)}); "
            f"download it with `minari download {dataset_id}` on a machine with internet (then copy the "
            "directory here), or point MINARI_DATASETS_PATH at the cache that holds it"
        ) from exc
    except (ValueError, OSError) as exc:
        raise DatasetError(f"Minari dataset {dataset_id!r} cannot be read: {exc}") from exc
    return flatten_minari(ds, dataset_id, dataset_id, env_id)


def flatten_minari(ds: Any, source: str, default_name: str, env_id: str | None) -> TransitionDataset:
    """Episodes → flat transitions; every episode's last row is a termination or a truncation."""
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
    if not cols["obs"]:
        raise DatasetError(f"{source}: the Minari dataset holds no episodes")
    space = ds.action_space
    meta = ds.storage.metadata
    refs = {k: float(meta[k]) for k in ("ref_min_score", "ref_max_score") if meta.get(k) is not None}
    env_spec = ds.spec.env_spec
    found, env_source = (env_spec.id, "Minari env_spec") if env_spec else (None, None)
    if env_id:
        found, env_source = env_id, "--env"
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    declared = low is not None and high is not None and bool(np.isfinite(low).all() & np.isfinite(high).all())
    return from_arrays(
        {
            "observations": np.concatenate(cols["obs"]),
            "next_observations": np.concatenate(cols["next"]),
            "actions": np.concatenate(cols["act"]),
            "rewards": np.concatenate(cols["rew"]),
            "terminals": np.concatenate(cols["term"]),
            "timeouts": np.concatenate(cols["trunc"]),
        },
        action_low=np.asarray(low, dtype=np.float32) if declared else None,
        action_high=np.asarray(high, dtype=np.float32) if declared else None,
        name=str(meta.get("dataset_id", default_name)),
        env_id=found,
        env_source=env_source,
        ref_scores=refs,
        source=source,
    )
