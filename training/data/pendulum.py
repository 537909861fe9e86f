"""Tier-0 data (docs/architecture.md, "Datasets"): Pendulum-v1 with a scripted energy-pumping + PD controller.

The pendulum obeys θ'' = 15·sin θ + 3u (θ = 0 upright), so E = ½θ'² + 15·cos θ is conserved without
torque and equals 15 at rest upright; dE/dt = 3uθ'. Far from the top the controller pumps energy toward 15
(u ∝ (15 − E)·sign θ'); near the top a PD loop holds it. It scores about −140 per episode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.minari_io import Episode, rollout, write_minari

ENV_ID = "Pendulum-v1"
MAX_TORQUE = 2.0
# Our own reference returns (200-step episodes), measured with this module over 100 seeds.
REF_RANDOM = -1207.0
REF_EXPERT = -146.0
KINDS = ("expert", "medium", "random", "mixed")

Controller = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def expert_action(obs: np.ndarray) -> np.ndarray:
    cos, sin, vel = obs[..., 0], obs[..., 1], obs[..., 2]
    theta = np.arctan2(sin, cos)
    energy = 0.5 * vel**2 + 15.0 * cos
    pump = np.clip((15.0 - energy) * np.sign(vel + 1e-6), -MAX_TORQUE, MAX_TORQUE)
    hold = np.clip(-10.0 * theta - 2.0 * vel, -MAX_TORQUE, MAX_TORQUE)
    return np.where(cos > np.cos(0.6), hold, pump)[..., None].astype(np.float32)


def epsilon_controller(eps: float) -> Controller:
    """With probability `eps` a uniform random torque, else the expert's."""

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < eps:
            return rng.uniform(-MAX_TORQUE, MAX_TORQUE, size=(1,)).astype(np.float32)
        return expert_action(obs)

    return act


def controller_rollout(controller: Controller, seed: int) -> Episode:
    import gymnasium as gym

    env = gym.make(ENV_ID)
    rng = np.random.default_rng(seed + 1_000_003)
    try:
        return rollout(env, lambda obs: controller(obs, rng), seed)
    finally:
        env.close()


def plan(kind: str, episodes: int) -> list[tuple[float, str]]:
    """(ε, label) per episode: ε = 0 expert, 1 random."""
    if kind == "expert":
        return [(0.0, "expert")] * episodes
    if kind == "medium":
        return [(0.5, "medium")] * episodes
    if kind == "random":
        return [(1.0, "random")] * episodes
    if kind == "mixed":
        n_expert = round(0.2 * episodes)
        return [(0.0, "expert")] * n_expert + [(0.7, "eps0.7")] * (episodes - n_expert)
    raise ValueError(f"unknown Pendulum dataset kind {kind!r}; choose one of {KINDS}")


def make_pendulum_datasets(
    root: Path, kinds: tuple[str, ...] = KINDS, episodes: int = 100, seed: int = 0, progress: bool = True
) -> dict[str, Path]:
    """Generate each kind as the Minari dataset `pendulum/<kind>-v0` under `root`."""
    out: dict[str, Path] = {}
    for k_index, kind in enumerate(kinds):
        schedule = plan(kind, episodes)
        base = seed * 100_000 + k_index * 10_000
        eps = [
            controller_rollout(epsilon_controller(e), base + i)
            for i, (e, _) in enumerate(
                tqdm(schedule, desc=f"pendulum/{kind}", unit="ep", leave=False, disable=not progress)
            )
        ]
        out[kind] = write_minari(
            root,
            f"pendulum/{kind}-v0",
            eps,
            ENV_ID,
            algorithm=f"scripted energy-pump+PD, schedule {kind}, seed {seed}",
            description=f"Pendulum-v1 {kind}: {episodes} episodes of 200 steps from the scripted controller",
            ref_min_score=REF_RANDOM,
            ref_max_score=REF_EXPERT,
        )
    return out
