"""One process of `make bench-train`: steps/s of every training phase (or of one d3rlpy peer), one thread.

Run as a file, not a module, so the `training` package it measures is whichever one `PYTHONPATH` puts first:
the bench points it at a git worktree of the reference commit to time the path before an optimisation,
and at this tree for the current one. It therefore uses only the trainer API both share
(`QIPOTrainer(data, cfg)`, `fit(until=)`, `*_step()`, `renew_support()`), and prints one JSON object.

    python training/bench/throughput_worker.py qipo --steps 200 [--profile]
    python training/bench/throughput_worker.py peer iql --steps 200
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

OBS, ACT, EPISODE = 17, 6, 1000  # HalfCheetah's dimensions; timing does not depend on the values
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def synthetic(n: int, seed: int = 0) -> Any:
    from training.data.dataset import TransitionDataset

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n + 1, OBS)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[EPISODE - 1 :: EPISODE] = True
    return TransitionDataset.validated(
        {
            "observations": obs[:-1],
            "next_observations": obs[1:],
            "actions": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
            "rewards": rng.standard_normal(n).astype(np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": timeouts,
        },
        action_low=-np.ones(ACT, np.float32),
        action_high=np.ones(ACT, np.float32),
        name="synthetic-halfcheetah-dims",
    )


def rate(step: Callable[[], Any], steps: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - started)


def profile(step: Callable[[], Any], steps: int = 20) -> dict[str, float]:
    """Where one step's wall time goes: matmul kernels, the optimiser, other ATen ops, autograd and
    dispatch bookkeeping, and what is left (Python), as fractions; plus the matmul FLOPs per step."""
    from torch.profiler import profile as torch_profile
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as flops:
        step()
    started = time.perf_counter()
    with torch_profile() as prof:
        for _ in range(steps):
            step()
    wall_us = (time.perf_counter() - started) * 1e6
    buckets = {"matmul": 0.0, "optimizer": 0.0, "other_ops": 0.0, "autograd_dispatch": 0.0}
    for event in prof.key_averages():
        name, us = event.key, float(event.self_cpu_time_total)
        if name in MATMUL:
            buckets["matmul"] += us
        elif name.startswith("Optimizer.") or "adam" in name or "_foreach" in name:
            buckets["optimizer"] += us
        elif name.startswith("aten::"):
            buckets["other_ops"] += us
        else:
            buckets["autograd_dispatch"] += us
    profiled = sum(buckets.values())
    out = {k: round(v / wall_us, 3) for k, v in buckets.items()}
    out["python"] = round(max(0.0, 1 - profiled / wall_us), 3)
    out["gflop_per_step"] = round(flops.get_total_flops() / 1e9, 4)
    return out


def gemm_gflops() -> float:
    """This core's float32 matmul rate at the networks' size (256³), the arithmetic ceiling of a step."""
    x, w = torch.randn(256, 256), torch.randn(256, 256)
    calls = rate(lambda: x @ w, 2000, warmup=200)
    return calls * 2 * 256**3 / 1e9


def qipo(steps: int, size: int, with_profile: bool) -> dict[str, Any]:
    from training.config import QIPOConfig
    from training.qipo import QIPOTrainer

    data = synthetic(size)
    base = {"behavior_steps": 11, "critic_steps": 11, "log_every": 10**6}
    settings: dict[str, dict[str, Any]] = {
        "behavior": {},
        "critic-iql": {"critic_kind": "iql"},
        "critic-softmax-q": {"critic_kind": "softmax-q"},
        "improve-full": {"improve_loss": "full"},
        "improve-resample": {"improve_loss": "resample"},
    }
    rates: dict[str, float] = {}
    profiles: dict[str, dict[str, float]] = {}
    renewal_s = 0.0
    for phase, extra in settings.items():
        trainer = QIPOTrainer(data, QIPOConfig.model_validate(base | extra), progress=False)
        if phase.startswith("critic"):
            trainer.fit(until=trainer.k1 + 1)  # the softmax-Q critic's behaviour samples
        elif phase.startswith("improve"):
            trainer.fit(until=trainer.k1 + trainer.k2 + 1)  # the first renewal
        step = {"behavior": trainer.behavior_step, "critic": trainer.critic_step}.get(
            phase.split("-")[0], trainer.improve_step
        )
        rates[phase] = rate(step, steps)
        if with_profile:
            profiles[phase] = profile(step)
        if phase == "improve-full":
            started = time.perf_counter()
            trainer.renew_support()  # a later renewal: freeze, temperature probe, diagnostics
            renewal_s = time.perf_counter() - started
    out: dict[str, Any] = {"steps_per_s": rates, "renewal_s": renewal_s, "gemm_gflops": gemm_gflops()}
    if with_profile:
        out["profile"] = profiles
    return out


def peer(name: str, steps: int, size: int) -> dict[str, Any]:
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    from training.bench.peers import mdp_dataset, peer_algo, peer_config

    data = synthetic(size)
    config = peer_config(peer_algo(name), data, steps, "halfcheetah-medium")
    model = config.create(device="cpu:0")
    dataset = mdp_dataset(data)
    build_scalers_with_transition_picker(model, dataset)  # what `fit` does before its first step
    model.build_with_dataset(dataset)
    batch = int(config.batch_size)
    return {
        "steps_per_s": rate(lambda: model.update(dataset.sample_transition_batch(batch)), steps),
        "batch_size": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["qipo", "peer"])
    parser.add_argument("name", nargs="?", default="iql")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=20_000, help="transitions in the synthetic dataset")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.what == "qipo":
        result = qipo(args.steps, args.size, args.profile)
    else:
        result = peer(args.name, args.steps, args.size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
