"""What a gymnasium env id means for a policy: its observation and action widths and its action bounds.

Every command that puts a policy into an env (the end-of-training evaluation, `qipo eval`, the dataset's
action bounds) asks here first, so an unknown id or a policy of the wrong shape is one readable line
instead of a traceback from deep inside gymnasium.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


class EnvError(ValueError):
    """The env id is unknown, cannot be built here or does not fit the policy; the message says the fix."""


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...] | None  # None when the action space is not a finite Box
    action_high: tuple[float, ...] | None


@lru_cache(maxsize=32)
def env_info(env_id: str) -> EnvInfo:
    """Build the env once to read its spaces; raise EnvError naming the fix when it cannot be built."""
    import gymnasium as gym
    from gymnasium import spaces

    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as exc:
        raise EnvError(f"env {env_id!r} needs a package that is not installed ({exc})") from exc
    except (gym.error.Error, ModuleNotFoundError, ImportError) as exc:
        raise EnvError(
            f"unknown env id {env_id!r} ({exc}); pass --env with a registered gymnasium id, e.g. Reacher-v5"
        ) from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, spaces.Box) or not isinstance(act_space, spaces.Box):
        raise EnvError(
            f"env {env_id!r} has {type(obs_space).__name__} observations and {type(act_space).__name__} "
            "actions; a flow policy needs Box (continuous) spaces for both"
        )
    low = np.asarray(act_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(act_space.high, dtype=np.float64).reshape(-1)
    finite = bool(np.isfinite(low).all() and np.isfinite(high).all())
    return EnvInfo(
        env_id=env_id,
        obs_dim=int(np.prod(obs_space.shape)),
        act_dim=int(np.prod(act_space.shape)),
        action_low=tuple(low.tolist()) if finite else None,
        action_high=tuple(high.tolist()) if finite else None,
    )


def check_fits(env_id: str, obs_dim: int, act_dim: int, what: str) -> EnvInfo:
    """Refuse to put a policy (`what`: "run runs/x", "artifact a/") into an env of another shape."""
    info = env_info(env_id)
    if (info.obs_dim, info.act_dim) != (obs_dim, act_dim):
        raise EnvError(
            f"{what} expects obs_dim={obs_dim}, act_dim={act_dim}; {env_id} gives obs_dim={info.obs_dim}, "
            f"act_dim={info.act_dim}: pass the env the policy was trained for with --env"
        )
    return info
