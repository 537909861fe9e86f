"""Closed-loop evaluation in gymnasium: episodes in lock-step, one batched policy call per step.

Noise is drawn per (episode, step) from `step_seed`, the same seed a robot would send to `/act`, so an
evaluation through the server can reproduce an in-process one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from service.policy import seeded_noise
from training.data import pendulum

ActFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (states [B,S], noise [B,A]) -> actions [B,A]
# (states [B,S], per-row step seeds [B]) -> actions [B,A]: a policy that draws its own noise from the seed,
# e.g. the server (`service.client.SeededActor`), which then reproduces an in-process evaluation exactly.
SeededActFn = Callable[[np.ndarray, list[int]], np.ndarray]

# Our own reference returns per env (random, expert), for a 0–100 normalised score. MuJoCo envs get
# theirs from the dataset generator (training.data.mujoco writes them into OWN_REFS_FILE-style metadata).
OWN_REFS: dict[str, tuple[float, float]] = {pendulum.ENV_ID: (pendulum.REF_RANDOM, pendulum.REF_EXPERT)}
# D4RL's v2 reference returns (random, expert). Our envs are gymnasium v5, so a score against these is
# "D4RL-style": comparable in spirit only (docs/architecture.md), and labelled so wherever it is reported.
D4RL_V2_REFS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def d4rl_key(env_id: str) -> str | None:
    name = env_id.split("/")[-1].split("-")[0].lower()
    return name if name in D4RL_V2_REFS else None


def d4rl_style_score(env_id: str, ret: float) -> float | None:
    """100·(ret − random)/(expert − random) with D4RL's v2 refs; None for envs D4RL does not cover."""
    key = d4rl_key(env_id)
    if key is None:
        return None
    low, high = D4RL_V2_REFS[key]
    return 100.0 * (ret - low) / (high - low)


def step_seed(seed: int, episode: int, step: int) -> int:
    return ((seed * 1_000_003 + episode) * 100_003 + step) % (2**63)


def step_noise(seed: int, episodes: list[int], step: int, act_dim: int) -> np.ndarray:
    rows = [seeded_noise(step_seed(seed, ep, step), 1, act_dim) for ep in episodes]
    return np.concatenate(rows, axis=0)


def normalized_score(env_id: str, ret: float, refs: tuple[float, float] | None = None) -> float | None:
    """0 = our random reference, 100 = our expert reference (`refs` overrides the built-in table)."""
    refs = refs or OWN_REFS.get(env_id)
    if refs is None:
        return None
    low, high = refs
    return 100.0 * (ret - low) / (high - low)


def evaluate(
    act: ActFn | None,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    progress: bool = True,
    seeded_act: SeededActFn | None = None,
    noise_dim: int | None = None,
    own_refs: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes with env seeds seed..seed+episodes-1; returns mean/std return and scores.

    All episodes step in lock-step and share one batched policy call per step (a vectorised rollout that
    keeps each env's own seed and stops stepping an env once its episode ends). `noise_dim` is the
    policy's noise width (N·A for best-of-N; default A).
    """
    import gymnasium as gym

    envs = [gym.make(env_id) for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    act_dim = noise_dim or int(np.prod(envs[0].action_space.shape or (1,)))
    returns = np.zeros(episodes)
    active = list(range(episodes))
    step = 0
    bar = tqdm(desc=f"eval {env_id}", unit="step", disable=not progress, leave=False)
    while active:
        states = np.stack([obs[i] for i in active]).astype(np.float32)
        if seeded_act is not None:
            actions = seeded_act(states, [step_seed(seed, i, step) for i in active])
        else:
            assert act is not None, "pass act or seeded_act"
            actions = act(states, step_noise(seed, active, step, act_dim))
        still = []
        for row, i in enumerate(active):
            obs[i], reward, terminated, truncated, _ = envs[i].step(actions[row])
            returns[i] += float(reward)
            if not (terminated or truncated):
                still.append(i)
        active = still
        step += 1
        bar.update(1)
    bar.close()
    for env in envs:
        env.close()
    mean = float(returns.mean())
    own = normalized_score(env_id, mean, own_refs)
    return {
        "env_id": env_id,
        "episodes": episodes,
        "seed": seed,
        "mean_return": mean,
        "std_return": float(returns.std()),
        "returns": returns.round(3).tolist(),
        "normalized_score": own,
        "normalized_score_refs": "own (random / expert of our generator)" if own is not None else None,
        "d4rl_style_score": d4rl_style_score(env_id, mean),
        "d4rl_style_score_refs": "D4RL v2 refs on a gymnasium v5 env (comparable in spirit only)"
        if d4rl_key(env_id)
        else None,
    }
