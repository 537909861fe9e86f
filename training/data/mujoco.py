"""Tier-1 data (docs/architecture.md, "Datasets"): Hopper-v5 / HalfCheetah-v5 datasets from
stable-baselines3 SAC behaviour policies, written as local Minari datasets (`<root>/<env>/<kind>-v0`),
D4RL-style:

- random:        uniform random actions;
- medium:        rollouts of a SAC policy trained for `sac_steps` (stochastic actions, as in D4RL);
- medium-replay: that SAC run's replay buffer, in the order it was collected;
- medium-expert: half medium rollouts, half rollouts of the same SAC trained `expert_steps` further.

Everything needed to regenerate a dataset is recorded in `<root>/<env>/generation.json`: seeds, step
budgets, SAC hyper-parameters, the SAC checkpoints (`checkpoints/*.zip`, sha256), the returns of each
policy (our own random/expert references) and wall times. Needs the `bench` extra (stable-baselines3,
gymnasium[mujoco]).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.data.minari_io import Episode, rollout, write_minari

ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}
KINDS = ("random", "medium", "medium-replay", "medium-expert")
SAC_KWARGS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "buffer_size": 1_000_000,
    "batch_size": 256,
    "tau": 0.005,
}
GENERATION_FILE = "generation.json"


def _require_bench() -> None:
    try:
        import mujoco  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"MuJoCo datasets need the bench extra ({exc.name} is missing): pip install -e '.[bench]'"
        ) from exc


def rollouts(
    env_id: str, policy: Any | None, transitions: int, seed: int, desc: str, progress: bool = True
) -> list[Episode]:
    """Whole episodes until at least `transitions` steps; `policy` None means uniform random actions."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    episodes: list[Episode] = []
    total = 0
    bar = tqdm(total=transitions, desc=desc, unit="step", leave=False, disable=not progress)
    while total < transitions:
        if policy is None:
            episode = rollout(env, lambda obs: env.action_space.sample(), seed + len(episodes))
        else:
            episode = rollout(
                env, lambda obs: policy.predict(obs, deterministic=False)[0], seed + len(episodes)
            )
        episodes.append(episode)
        total += len(episode.actions)
        bar.update(len(episode.actions))
    bar.close()
    env.close()
    return episodes


def _progress(steps: int, desc: str, progress: bool = True) -> Any:
    """A tqdm bar over SAC environment steps (SB3's own bar is rich-only and silent in log files)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TqdmCallback(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=steps, desc=desc, unit="step", mininterval=5.0, disable=not progress)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return TqdmCallback()


def replay_episodes(model: Any) -> list[Episode]:
    """The SAC replay buffer (one env) cut into episodes in collection order; a trailing unfinished
    episode is kept and marked truncated."""
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    obs, nxt = buf.observations[:n, 0], buf.next_observations[:n, 0]
    act, rew = buf.actions[:n, 0], buf.rewards[:n, 0]
    done, timeout = buf.dones[:n, 0].astype(bool), buf.timeouts[:n, 0].astype(bool)
    ends = [int(e) for e in np.flatnonzero(done)]
    if not ends or ends[-1] != n - 1:
        ends.append(n - 1)
    episodes, start = [], 0
    for end in ends:
        sl = slice(start, end + 1)
        terminated = done[sl] & ~timeout[sl]
        truncated = timeout[sl].copy()
        if not (terminated[-1] or truncated[-1]):
            truncated[-1] = True
        episodes.append(
            Episode(
                np.concatenate([obs[sl], nxt[end : end + 1]]).astype(np.float32),
                act[sl].astype(np.float32),
                rew[sl].astype(np.float32),
                terminated,
                truncated,
            )
        )
        start = end + 1
    return episodes


def mean_return(episodes: list[Episode]) -> float:
    return float(np.mean([ep.rewards.sum() for ep in episodes]))


def _versions() -> dict[str, str]:
    """Library versions that decide the bytes of a regenerated dataset (SAC, simulator, env, torch)."""
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("stable-baselines3", "mujoco", "gymnasium", "torch", "numpy")}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_mujoco_datasets(
    env: str,
    root: Path,
    kinds: tuple[str, ...] = KINDS,
    *,
    sac_steps: int = 100_000,
    expert_steps: int | None = None,
    transitions: int = 200_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Train SAC (medium, then expert), roll out and write each requested kind; returns kind → path."""
    _require_bench()
    import torch
    from stable_baselines3 import SAC

    if env not in ENVS:
        raise ValueError(f"unknown MuJoCo env {env!r}; choose one of {sorted(ENVS)}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown dataset kind(s) {unknown}; choose from {KINDS}")
    import gymnasium as gym

    env_id = ENVS[env]
    expert_steps = sac_steps if expert_steps is None else expert_steps
    base = root / env
    ckpt_dir = base / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "env_id": env_id,
        "seed": seed,
        "sac_steps": sac_steps,
        "expert_steps": expert_steps,
        "transitions": transitions,
        "sac_kwargs": SAC_KWARGS,
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
        "timings_s": {},
        "returns": {},
        "datasets": {},
    }
    timings = record["timings_s"]

    started = time.perf_counter()
    random_eps = rollouts(env_id, None, transitions, seed, f"{env}/random", progress)
    timings["random_rollouts"] = round(time.perf_counter() - started, 1)
    record["returns"]["random"] = mean_return(random_eps)

    needs_sac = any(k != "random" for k in kinds)
    medium_eps: list[Episode] = []
    if needs_sac:
        started = time.perf_counter()
        model = SAC("MlpPolicy", gym.make(env_id), seed=seed, verbose=0, **SAC_KWARGS)
        model.learn(total_timesteps=sac_steps, callback=_progress(sac_steps, f"{env}/SAC medium", progress))
        timings["sac_medium_train"] = round(time.perf_counter() - started, 1)
        medium_ckpt = ckpt_dir / "sac-medium.zip"
        model.save(medium_ckpt)
        record["checkpoints"] = {"medium": {"path": str(medium_ckpt.name), "sha256": _sha256(medium_ckpt)}}
        replay = replay_episodes(model)
        started = time.perf_counter()
        n_medium = transitions if "medium" in kinds else 0
        if "medium-expert" in kinds:
            n_medium = max(n_medium, transitions // 2)
        medium_eps = rollouts(env_id, model, max(n_medium, 1), seed + 1_000_000, f"{env}/medium", progress)
        timings["medium_rollouts"] = round(time.perf_counter() - started, 1)
        record["returns"]["medium"] = mean_return(medium_eps)
        record["returns"]["medium_replay"] = mean_return(replay)

    out: dict[str, Path] = {}

    def write(kind: str, episodes: list[Episode], algorithm: str) -> None:
        refs = (record["returns"]["random"], record["returns"].get("expert", record["returns"].get("medium")))
        out[kind] = write_minari(
            root,
            f"{env}/{kind}-v0",
            episodes,
            env_id,
            algorithm=algorithm,
            description=f"{env_id} {kind}: {sum(len(e.actions) for e in episodes)} transitions, "
            f"regenerate with `qipo data make {env} --sac-steps {sac_steps} --seed {seed}`",
            ref_min_score=refs[0],
            ref_max_score=refs[1],
        )
        record["datasets"][kind] = {
            "path": str(out[kind]),
            "episodes": len(episodes),
            "transitions": int(sum(len(e.actions) for e in episodes)),
            "mean_return": mean_return(episodes),
        }

    if "medium-expert" in kinds:
        started = time.perf_counter()
        model.learn(
            total_timesteps=expert_steps,
            reset_num_timesteps=False,
            callback=_progress(expert_steps, f"{env}/SAC expert", progress),
        )
        timings["sac_expert_train"] = round(time.perf_counter() - started, 1)
        expert_ckpt = ckpt_dir / "sac-expert.zip"
        model.save(expert_ckpt)
        record["checkpoints"]["expert"] = {"path": str(expert_ckpt.name), "sha256": _sha256(expert_ckpt)}
        started = time.perf_counter()
        expert_eps = rollouts(
            env_id, model, transitions - transitions // 2, seed + 2_000_000, f"{env}/expert", progress
        )
        timings["expert_rollouts"] = round(time.perf_counter() - started, 1)
        record["returns"]["expert"] = mean_return(expert_eps)
    # Our own references: random actions (0) and the best SAC policy we trained (100).
    record["own_refs"] = {
        "random": record["returns"]["random"],
        "expert": record["returns"].get("expert", record["returns"].get("medium")),
    }
    if "random" in kinds:
        write("random", random_eps, f"uniform random, seed {seed}")
    if "medium" in kinds:
        write("medium", medium_eps[: _episodes_for(medium_eps, transitions)], f"SAC {sac_steps} steps")
    if "medium-replay" in kinds:
        write("medium-replay", replay, f"SAC replay buffer of {sac_steps} steps")
    if "medium-expert" in kinds:
        half = medium_eps[: _episodes_for(medium_eps, transitions // 2)]
        write("medium-expert", half + expert_eps, f"SAC {sac_steps} + {sac_steps + expert_steps} steps")
    (base / GENERATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _episodes_for(episodes: list[Episode], transitions: int) -> int:
    """How many leading episodes reach `transitions` steps (whole episodes only)."""
    total = 0
    for i, ep in enumerate(episodes):
        total += len(ep.actions)
        if total >= transitions:
            return i + 1
    return len(episodes)
