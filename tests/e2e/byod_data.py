"""A user's own dataset as a new user brings it: D4RL's HDF5 layout for Reacher-v5, with the env named in
`attrs["env"]` (no `env_id`) and no declared action bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENV_ID = "Reacher-v5"


def write_reacher_hdf5(path: Path, episodes: int = 12, seed: int = 0, next_observations: bool = True) -> Path:
    """Half the episodes from a proportional controller toward the target, half uniformly random actions."""
    import gymnasium as gym
    import h5py

    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next", "act", "rew", "term", "tout")}
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            if ep % 2:
                action = env.action_space.sample()
            else:  # obs[8:10] is fingertip − target: push the joints against it
                action = np.clip(-3.0 * obs[8:10], -1.0, 1.0).astype(np.float32)
            nxt, reward, terminated, truncated, _ = env.step(action)
            rows["obs"].append(obs)
            rows["next"].append(nxt)
            rows["act"].append(action)
            rows["rew"].append(np.float32(reward))
            rows["term"].append(terminated)
            rows["tout"].append(truncated)
            obs, done = nxt, terminated or truncated
    env.close()
    with h5py.File(path, "w") as fh:
        fh["observations"] = np.asarray(rows["obs"], np.float32)
        fh["actions"] = np.asarray(rows["act"], np.float32)
        fh["rewards"] = np.asarray(rows["rew"], np.float32)
        fh["terminals"] = np.asarray(rows["term"], bool)
        fh["timeouts"] = np.asarray(rows["tout"], bool)
        if next_observations:
            fh["next_observations"] = np.asarray(rows["next"], np.float32)
        fh.attrs["env"] = ENV_ID
    return path
