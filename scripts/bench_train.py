"""Training throughput: QIPO steps/s next to d3rlpy IQL in the same run, and one full renewal.

HalfCheetah dimensions (obs 17, act 6), batch 256, one torch thread for both, on synthetic arrays (timing
does not depend on the values). QIPO and IQL are timed in alternating blocks so a change in machine load
hits both. `qipo_steps_per_s` is the throughput of a whole default schedule (K1 behaviour, K2 critic, K3
improvement steps, each phase at its measured rate), excluding renewals, which are reported separately as
`renewal_s` (one full renewal of every support set on the `dataset_size`-transition dataset).

    python scripts/bench_train.py [--out docs/bench] [--steps 200] [--dataset-size 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.bench import cpu_model
from training.config import QIPOConfig
from training.data.dataset import TransitionDataset
from training.qipo import QIPOTrainer

OBS, ACT, EPISODE = 17, 6, 1000
# The cheaper options, measured beside the defaults: IQL critic (no behaviour samples in the target) and
# the resampled improvement loss (same expected loss, one support action per state).
FAST: dict[str, Any] = {"critic_kind": "iql", "improve_loss": "resample"}


def synthetic(n: int, seed: int = 0) -> TransitionDataset:
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


def qipo_rates(cfg: QIPOConfig, data: TransitionDataset, steps: int) -> dict[str, float]:
    trainer = QIPOTrainer(data, cfg, progress=False)
    out = {"behavior": rate(trainer.behavior_step, steps)}
    trainer.fit(until=trainer.k1 + 1)  # draws the behaviour samples the critic needs
    out["critic"] = rate(trainer.critic_step, steps)
    trainer.fit(until=trainer.k1 + trainer.k2 + 1)  # first support sets
    out["improve"] = rate(trainer.improve_step, steps)
    return out


def iql_rate(data: TransitionDataset, steps: int) -> float:
    import d3rlpy

    dataset = d3rlpy.dataset.MDPDataset(
        observations=data.observations,
        actions=data.actions,
        rewards=data.rewards,
        terminals=data.terminals.astype(np.float32),
        timeouts=data.timeouts.astype(np.float32),
    )
    iql = d3rlpy.algos.IQLConfig(batch_size=256).create(device="cpu:0")
    iql.build_with_dataset(dataset)

    def step() -> None:  # what d3rlpy's fit loop does per gradient step
        iql.update(dataset.sample_transition_batch(256))

    return rate(step, steps)


def schedule_rate(cfg: QIPOConfig, rates: dict[str, float]) -> float:
    phases = {"behavior": cfg.behavior_steps, "critic": cfg.critic_steps, "improve": cfg.improve_steps}
    seconds = sum(n / rates[p] for p, n in phases.items())
    return sum(phases.values()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--steps", type=int, default=200, help="timed gradient steps per block")
    parser.add_argument("--rounds", type=int, default=2, help="alternating QIPO/IQL blocks")
    parser.add_argument("--dataset-size", type=int, default=200_000)
    parser.add_argument("--bench-size", type=int, default=20_000, help="transitions for the steps/s runs")
    parser.add_argument("--config", type=Path, default=None, help="QIPOConfig JSON (default: defaults)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = round(os.getloadavg()[0], 2)
    base = json.loads(args.config.read_text()) if args.config else {}
    cfg = QIPOConfig.model_validate(base | {"behavior_steps": 11, "critic_steps": 11, "log_every": 10**6})
    full_cfg = QIPOConfig.model_validate(base)  # the schedule the rates are weighted by
    small = synthetic(args.bench_size)
    fast_cfg = cfg.model_copy(update=FAST)
    qipo_runs: list[dict[str, float]] = []
    fast_runs: list[dict[str, float]] = []
    iql_runs: list[float] = []
    for r in range(args.rounds):
        qipo_runs.append(qipo_rates(cfg, small, args.steps))
        iql_runs.append(iql_rate(small, args.steps))
        fast_runs.append(qipo_rates(fast_cfg, small, args.steps))
        print(f"round {r}: qipo {qipo_runs[-1]}, fast {fast_runs[-1]}, iql {iql_runs[-1]:.1f}", flush=True)
    phase_rates = {p: statistics.median(run[p] for run in qipo_runs) for p in qipo_runs[0]}
    fast_rates = {p: statistics.median(run[p] for run in fast_runs) for p in fast_runs[0]}
    qipo = schedule_rate(full_cfg, phase_rates)
    fast = schedule_rate(full_cfg, fast_rates)
    iql = statistics.median(iql_runs)

    # One full renewal on the big dataset. The IQL critic skips the critic's behaviour pre-sampling (as
    # costly as a renewal) so the first renewal here samples afresh; its cost does not depend on the critic.
    big = synthetic(args.dataset_size, seed=1)
    trainer = QIPOTrainer(big, cfg.model_copy(update={"critic_kind": "iql"}), progress=True)
    trainer.fit(until=trainer.k1 + trainer.k2 + 1)
    renewal = trainer.renewal_s[0]

    result = {
        "qipo_steps_per_s": round(qipo, 1),
        "iql_steps_per_s": round(iql, 1),
        "ratio": round(qipo / iql, 3),
        "renewal_s": round(renewal, 2),
        "dataset_size": args.dataset_size,
        "qipo_phase_steps_per_s": {k: round(v, 1) for k, v in phase_rates.items()},
        "fast_config": FAST,
        "qipo_fast_steps_per_s": round(fast, 1),
        "fast_ratio": round(fast / iql, 3),
        "qipo_fast_phase_steps_per_s": {k: round(v, 1) for k, v in fast_rates.items()},
        "schedule": {
            "K1": full_cfg.behavior_steps,
            "K2": full_cfg.critic_steps,
            "K3": full_cfg.improve_steps,
        },
        "batch_size": cfg.batch_size,
        "improve_batch_size": cfg.improve_batch_size,
        "obs_dim": OBS,
        "act_dim": ACT,
        "sample_dtype": str(trainer.sample_dtype).removeprefix("torch."),
        "config": cfg.model_dump(mode="json"),
        "iql": "d3rlpy 2.8.1 IQLConfig(batch_size=256), update(sample_transition_batch(256)) per step",
        "threads": 1,
        "machine": f"{platform.machine()}, {cpu_model()}, torch {torch.__version__}",
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "train.md").write_text(markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))


def markdown(r: dict[str, Any]) -> str:
    ph = r["qipo_phase_steps_per_s"]
    net = r["config"]["network"]
    return "\n".join(
        [
            "# Training throughput: QIPO vs d3rlpy IQL (same run)",
            "",
            f"HalfCheetah dimensions (obs {r['obs_dim']}, act {r['act_dim']}), batch {r['batch_size']}, "
            f"1 torch thread each, synthetic arrays, timed in alternating blocks. Machine: {r['machine']}, "
            f"1-min load average {r['load_average_1min']['start']} at the start, "
            f"{r['load_average_1min']['end']} at the end. Critic: twin Q, "
            f"{net['critic_layers']} hidden layers × {net['critic_hidden']}; velocity net {net['hidden']} "
            f"wide × {net['blocks']} "
            "residual blocks.",
            "",
            "| | steps/s |",
            "|---|---|",
            f"| QIPO, whole default schedule (K1 {r['schedule']['K1']} / K2 {r['schedule']['K2']} / "
            f"K3 {r['schedule']['K3']}) | **{r['qipo_steps_per_s']}** |",
            f"| d3rlpy IQL | **{r['iql_steps_per_s']}** |",
            f"| ratio QIPO / IQL | **{r['ratio']}×** |",
            f"| QIPO behaviour (flow matching) step | {ph['behavior']} |",
            f"| QIPO softmax-Q critic step (M = {r['config']['critic_support']} behaviour samples at s') "
            f"| {ph['critic']} |",
            f"| QIPO improvement step, full (Σ over M+1 support actions × {r['improve_batch_size']} states) "
            f"| {ph['improve']} |",
            f"| QIPO with {json.dumps(r['fast_config'])}, whole schedule | **{r['qipo_fast_steps_per_s']}** "
            f"({r['fast_ratio']}× IQL) |",
            f"| … its critic (IQL expectile) step | {r['qipo_fast_phase_steps_per_s']['critic']} |",
            f"| … its improvement step, resample (one support action per state, batch {r['batch_size']}) "
            f"| {r['qipo_fast_phase_steps_per_s']['improve']} |",
            "",
            f"One full renewal of every support set on {r['dataset_size']:,} transitions "
            f"(M = {r['config']['support_size']} samples × {r['config']['solver_steps']} "
            f"{r['config']['solver']} steps + Q weights, sampling in {r['sample_dtype']}): "
            f"**{r['renewal_s']} s**. With the softmax-Q critic the first renewal reuses the critic's "
            "behaviour samples (the policy has not changed yet) and costs only the Q weights.",
            "",
            "Regenerate: `make bench-train`.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
