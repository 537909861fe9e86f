"""A held-out task that looks like what users bring: Reacher-v5 (a two-joint arm reaching a random target,
50-step episodes that always time out) with a scripted controller and a mixed dataset that is mostly noise.

The controller is a Jacobian-transpose PD law read off the observation alone (so it is a Markov policy a
learner could copy): with joint angles q, the fingertip offset δ = tip − target (obs[8:10]) and the link
lengths 0.1 and 0.11 of the model, it applies τ = Jᵀ(q)·(−k_p·δ) − k_d·q̇, clipped to the unit box. Gains
k_p = 20, k_d = 0.1 were picked on a small grid (30 seeds each; the return falls off on either side).

Kinds (`<root>/reacher/<kind>-v0`):
- expert: the controller (≈ −5.4 per episode; uniform random actions score ≈ −42.6);
- noisy:  the controller plus N(0, 0.3²) on each torque, clipped (≈ −16.5);
- random: uniform random torques;
- mixed:  20% expert, 30% noisy and 50% random episodes: a user's log of a few good runs among many bad.
Every episode's env seed and noise stream are functions of (seed, kind, episode), so a rebuild is
byte-identical; `<root>/reacher/generation.json` records the returns of each part and the wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.data.minari_io import Episode, rollout, write_minari

ENV_ID = "Reacher-v5"
LINKS = (0.1, 0.11)  # shoulder→elbow and elbow→fingertip in reacher.xml
KP, KD = 20.0, 0.1
NOISE_STD = 0.3
KINDS = ("expert", "noisy", "random", "mixed")
MIXED_PARTS = (("expert", 0.2), ("noisy", 0.3), ("random", 0.5))
DEFAULT_EPISODES = 1000  # 50k transitions per dataset
GENERATION_FILE = "generation.json"
# Our own reference returns (50-step episodes): means of this module's random and expert episodes over
# seeds 0-199 (`reference_returns`), the 0 and 100 of the normalised score.
REF_RANDOM = -42.6
REF_EXPERT = -5.4

Controller = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def expert_action(obs: np.ndarray) -> np.ndarray:
    """Jacobian-transpose PD toward the target, from the observation alone."""
    q = np.arctan2(obs[2:4], obs[0:2])
    qd, delta = obs[6:8], obs[8:10]
    l1, l2 = LINKS
    s1, c1 = np.sin(q[0]), np.cos(q[0])
    s12, c12 = np.sin(q[0] + q[1]), np.cos(q[0] + q[1])
    jac = np.array([[-l1 * s1 - l2 * s12, -l2 * s12], [l1 * c1 + l2 * c12, l2 * c12]])
    torque = jac.T @ (-KP * delta) - KD * qd
    return np.clip(torque, -1.0, 1.0).astype(np.float32)


def controller(part: str) -> Controller:
    """The policy of one part: the expert, the expert with Gaussian torque noise, or uniform torques."""
    if part == "expert":
        return lambda obs, rng: expert_action(obs)
    if part == "noisy":
        return lambda obs, rng: np.clip(expert_action(obs) + rng.normal(0, NOISE_STD, 2), -1, 1).astype(
            np.float32
        )
    if part == "random":
        return lambda obs, rng: rng.uniform(-1.0, 1.0, 2).astype(np.float32)
    raise ValueError(f"unknown Reacher part {part!r}; choose expert, noisy or random")


def plan(kind: str, episodes: int) -> list[str]:
    """The part of every episode of one dataset, in order (mixed: the parts in blocks, rounded)."""
    if kind in ("expert", "noisy", "random"):
        return [kind] * episodes
    if kind != "mixed":
        raise ValueError(f"unknown Reacher dataset kind {kind!r}; choose one of {KINDS}")
    counts = [round(share * episodes) for _, share in MIXED_PARTS[:-1]]
    counts.append(episodes - sum(counts))
    return [part for (part, _), n in zip(MIXED_PARTS, counts, strict=True) for _ in range(n)]


def episodes_of(parts: list[str], base_seed: int, desc: str, progress: bool = True) -> list[Episode]:
    """One episode per entry of `parts`; episode i resets with seed base_seed + i and draws its noise from
    a generator of its own, so any prefix of a dataset is the same whatever its length."""
    import gymnasium as gym

    env = gym.make(ENV_ID)
    try:
        out = []
        for i, part in enumerate(tqdm(parts, desc=desc, unit="ep", leave=False, disable=not progress)):
            rng = np.random.default_rng([base_seed, i])
            act = controller(part)
            out.append(rollout(env, partial(_act_with, act, rng), base_seed + i))
        return out
    finally:
        env.close()


def _act_with(act: Controller, rng: np.random.Generator, obs: np.ndarray) -> np.ndarray:
    return act(obs, rng)


def part_stats(parts: list[str], episodes: list[Episode]) -> dict[str, dict[str, float | int]]:
    """Per part: episodes and the mean / std / min / max of their returns."""
    out: dict[str, dict[str, float | int]] = {}
    for part in dict.fromkeys(parts):
        returns = np.array(
            [float(ep.rewards.sum()) for p, ep in zip(parts, episodes, strict=True) if p == part]
        )
        out[part] = {
            "episodes": len(returns),
            "mean_return": round(float(returns.mean()), 3),
            "std_return": round(float(returns.std()), 3),
            "min_return": round(float(returns.min()), 3),
            "max_return": round(float(returns.max()), 3),
        }
    return out


def make_reacher_datasets(
    root: Path,
    kinds: tuple[str, ...] = KINDS,
    episodes: int = DEFAULT_EPISODES,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate each kind as the Minari dataset `reacher/<kind>-v0` under `root` (about 10 s per 1,000
    episodes on one core) and record their returns in `reacher/generation.json`."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown Reacher dataset kind(s) {unknown}; choose from {KINDS}")
    out: dict[str, Path] = {}
    record: dict[str, Any] = {
        "env_id": ENV_ID,
        "seed": seed,
        "episodes": episodes,
        "controller": {"kp": KP, "kd": KD, "noise_std": NOISE_STD, "mixed_parts": dict(MIXED_PARTS)},
        "own_refs": {"random": REF_RANDOM, "expert": REF_EXPERT},
        "datasets": {},
    }
    for kind in kinds:
        started = time.perf_counter()
        parts = plan(kind, episodes)
        eps = episodes_of(parts, seed * 1_000_000 + KINDS.index(kind) * 100_000, f"reacher/{kind}", progress)
        out[kind] = write_minari(
            root,
            f"reacher/{kind}-v0",
            eps,
            ENV_ID,
            algorithm=f"scripted Jacobian-transpose PD, schedule {kind}, seed {seed}",
            description=f"Reacher-v5 {kind}: {episodes} episodes of 50 steps "
            f"(regenerate with `qipo data make reacher --kinds {kind} --episodes {episodes} --seed {seed}`)",
            ref_min_score=REF_RANDOM,
            ref_max_score=REF_EXPERT,
        )
        returns = np.array([float(ep.rewards.sum()) for ep in eps])
        record["datasets"][kind] = {
            "path": str(out[kind]),
            "transitions": int(sum(len(ep.actions) for ep in eps)),
            "mean_return": round(float(returns.mean()), 3),
            "parts": part_stats(parts, eps),
            "wall_s": round(time.perf_counter() - started, 1),
        }
    (root / "reacher" / GENERATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def reference_returns(seeds: int = 200) -> dict[str, float]:
    """Mean return of the random and expert parts over `seeds` episodes (how REF_* were measured)."""
    return {
        part: float(np.mean([ep.rewards.sum() for ep in episodes_of([part] * seeds, 0, part, False)]))
        for part in ("random", "expert")
    }
