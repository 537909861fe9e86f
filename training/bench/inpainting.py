"""Replacement against soft-mask inpainting on Pendulum with H = 4 under a simulated delay.

Trains a chunked QIPO-OT policy on Pendulum `mixed` data (the demo config, a few thousand steps), then runs
it closed-loop with `ChunkedController` and `SimulatedDelay` for delays d ∈ {1, 2} and actions executed per
chunk s ∈ {1, 2}, once per inpainting: none (naive switching at the right index), replace, soft. Every
arm sees the same noise seeds. Reports the return, the action jump |a_{t+1} − a_t| at chunk switches against
inside chunks, and how far the new chunk lies from the prefix on the committed and on the rest of the
overlap. Writes docs/bench/inpainting_pendulum.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_inpainting.py [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from qipo_client.chunking import ChunkedController, SimulatedDelay, executed_jerk
from qipo_client.policy import Seeds, step_seed

from training.checkpoint import policy_from_checkpoint
from training.config import QIPOConfig
from training.data import load_dataset
from training.data.pendulum import make_pendulum_datasets
from training.policy import FlowPolicy
from training.qipo import QIPOTrainer

ROOT = Path(__file__).resolve().parents[2]
H, PERIOD, EPISODES, STEPS = 4, 0.05, 10, 200
# (delay d in control steps, actions executed per chunk s) of each arm, each run with every inpainting
ARMS = ((1, 1), (1, 2), (2, 2))
INPAINTINGS = ("none", "replace", "soft")
# The Pendulum demo's config (configs/pendulum-demo.json) with chunks and a budget of minutes on one core.
CONFIG = json.loads((ROOT / "configs" / "pendulum-demo.json").read_text()) | {
    "action_horizon": H,
    "behavior_steps": 3000,
    "critic_steps": 1500,
    "improve_steps": 1000,
    "renew_every": 250,
    "probe_states": 256,
}


class StepClock:
    """Simulated time: the loop advances it one control period per step."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def episode_noise(episode: int, step: int) -> Seeds:
    """The noise of the request made at a control step: the same in every arm."""
    return Seeds([step_seed(0, episode, step)])


def run_arm(policy: FlowPolicy, delay: int, execute: int, inpaint: bool) -> dict[str, Any]:
    returns: list[float] = []
    jerks: list[dict[str, Any]] = []
    committed_gap: list[float] = []
    overlap_gap: list[float] = []
    for episode in range(EPISODES):
        clock = StepClock()
        ctrl = ChunkedController(
            policy,
            runner=SimulatedDelay(delay, PERIOD, clock),
            clock=clock,
            period_s=PERIOD,
            execute_steps=execute,
            inpaint=inpaint,
            noise=functools.partial(episode_noise, episode),
            history=STEPS,
        )
        env = gym.make("Pendulum-v1")
        obs, _ = env.reset(seed=1000 + episode)
        total, actions = 0.0, []
        for _ in range(STEPS):
            action = ctrl.step(obs)
            actions.append(action)
            obs, reward, *_ = env.step(action)
            total += float(reward)
            clock.t += PERIOD
        env.close()
        returns.append(total)
        switches = [sw for sw in ctrl.switches if len(sw.prefix)]
        jerks.append(executed_jerk(actions, [sw.switch_step for sw in switches]))
        for sw in switches:
            d, length = sw.committed, len(sw.prefix)
            if d:
                committed_gap.append(float(np.abs(sw.chunk[:d] - sw.prefix[:d]).max()))
            if length > d:
                overlap_gap.append(float(np.abs(sw.chunk[d:length] - sw.prefix[d:length]).mean()))
    return arm_summary(returns, jerks, committed_gap, overlap_gap)


def arm_summary(
    returns: list[float],
    jerks: list[dict[str, Any]],
    committed_gap: list[float],
    overlap_gap: list[float],
) -> dict[str, Any]:
    """One arm's row: mean return, the action jump at chunk switches against inside chunks, and how far the
    new chunks lay from the prefix on the committed actions (largest) and the rest of the overlap (mean)."""
    boundary = [j["boundary"] for j in jerks]
    inside = [j["inside"] for j in jerks]
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "jerk_boundary": float(np.nanmean(boundary)),
        "jerk_inside": float(np.nanmean(inside)),
        "jerk_ratio": float(np.nanmean(boundary) / np.nanmean(inside)),
        "committed_max_abs": max(committed_gap, default=0.0),
        "overlap_mean_abs": float(np.mean(overlap_gap)) if overlap_gap else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/qipo-inpainting"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = make_pendulum_datasets(args.work / "data", ("mixed",), episodes=50, seed=0)["mixed"]
    run = args.work / "run"
    if not (run / "config.json").exists():
        trainer = QIPOTrainer(load_dataset(data), QIPOConfig.model_validate(CONFIG), progress=False)
        trainer.fit()
        trainer.save(run)
    policy, _, _ = policy_from_checkpoint(run)
    results: list[dict[str, Any]] = []
    for delay, execute in ARMS:
        for mode in INPAINTINGS:
            if mode != "none":
                policy.inpainting = mode  # type: ignore[assignment]
            row = {"delay": delay, "execute_steps": execute, "inpainting": mode}
            row |= run_arm(policy, delay, execute, inpaint=mode != "none")
            results.append(row)
            print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inpainting_pendulum.json").write_text(json.dumps(report(results), indent=2) + "\n")


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What inpainting_pendulum.json holds."""
    return {"env": "Pendulum-v1", "horizon": H, "episodes": EPISODES, "config": CONFIG, "rows": rows}


if __name__ == "__main__":
    main()
