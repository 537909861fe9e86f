"""Closed-loop evaluation in gymnasium: episodes in lock-step, one batched policy call per step.

Takes any `Policy` (qipo_client.policy): the torch flow policy, a verified ONNX artifact, the server
(`qipo_client.RemotePolicy`), a peer. Each row's noise is `Seeds` of `step_seed(seed, episode, step)`, the
seed a robot would send to `/act`, so an evaluation through the server reproduces an in-process one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qipo_client.policy import Policy, Seeds, step_seed
from tqdm import tqdm

from training.data import pendulum

__all__ = ["evaluate", "step_seed"]

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


def normalized_score(env_id: str, ret: float, refs: tuple[float, float] | None = None) -> float | None:
    """0 = our random reference, 100 = our expert reference (`refs` overrides the built-in table)."""
    refs = refs or OWN_REFS.get(env_id)
    if refs is None:
        return None
    low, high = refs
    return 100.0 * (ret - low) / (high - low)


def evaluate(
    policy: Policy,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    progress: bool = True,
    own_refs: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes with env seeds seed..seed+episodes-1; returns mean/std return and scores.

    All episodes step in lock-step and share one batched `policy.infer` per step (a vectorised rollout
    that keeps each env's own seed and stops stepping an env once its episode ends); `policy.reset()`
    runs once before the episodes start. A chunked policy (`infer` answers [B, H, A]) is executed
    open-loop: each chunk's H actions are applied in turn and a new chunk is planned every H steps, from
    the state reached then (the seed of the step at which it is planned).
    """
    import gymnasium as gym

    envs = [gym.make(env_id) for _ in range(episodes)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    policy.reset()
    returns = np.zeros(episodes)
    active = list(range(episodes))
    step, horizon = 0, 1
    plan: dict[int, np.ndarray] = {}  # env → its current chunk [H, A]
    bar = tqdm(desc=f"eval {env_id}", unit="step", disable=not progress, leave=False)
    while active:
        if step % horizon == 0:  # every step for H = 1; all envs re-plan together, being in lock-step
            states = np.stack([obs[i] for i in active]).astype(np.float32)
            out = policy.infer(states, Seeds([step_seed(seed, i, step) for i in active]))
            chunks = out[:, None] if out.ndim == 2 else out
            horizon = chunks.shape[1]
            plan = {i: chunks[row] for row, i in enumerate(active)}
        still = []
        for i in active:
            obs[i], reward, terminated, truncated, _ = envs[i].step(plan[i][step % horizon])
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
