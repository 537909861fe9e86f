"""Probe the improvement phase from one shared BC + critic checkpoint (the experiments behind its defaults).

Training the behaviour model and the critic is most of a QIPO run's cost, and the improvement phase is where
the policy is won or lost. This script trains K1 + K2 once into `--base` (resumable), then runs the K3 phase
of one variant (`--set` JSON merged into the config, e.g. '{"beta": 0, "temperature": "raw"}') and evaluates
one sample per state (at each `--noise-scales`) and best-of-N along the way. One JSON per env, dataset and
variant under `--out`; a variant already recorded is skipped.

    python scripts/probe_improvement.py --data data/hopper/medium-v0 --base build/probe/hopper-medium \
        --name uniform --set '{"temperature": "raw", "beta": 0}' --out docs/bench/rl-probes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from training.bench.grid import EVAL_SEED_BASE, Evaluator, write_json_atomic
from training.checkpoint import load_checkpoint
from training.config import QIPOConfig
from training.data.dataset import load_dataset
from training.qipo import QIPOTrainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--base", type=Path, required=True, help="checkpoint dir of the shared K1 + K2 phases")
    p.add_argument("--base-set", default="{}", help="JSON for the shared phases (e.g. critic_steps)")
    p.add_argument("--name", required=True)
    p.add_argument("--set", default="{}", help="JSON merged into the config of the improvement phase")
    p.add_argument("--out", type=Path, default=Path("docs/bench/rl-probes"))
    p.add_argument("--evals", default="0,1000,2000,4000", help="improvement steps to evaluate at")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--noise-scales",
        default="1",
        help="source-noise scales to act with, one sample per state (1: the policy; 0: noise-free)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / f"{args.data.parent.name}__{args.data.name}__{args.name}.json"  # env__dataset__name
    if record.exists():
        print(f"skip {args.name}: {record} exists")
        return
    data = load_dataset(args.data)
    base = json.loads(args.base_set)
    shared = QIPOConfig.model_validate(base)
    if not (args.base / "checkpoint.pt").exists():
        started = time.perf_counter()
        trainer = QIPOTrainer(data, shared)
        trainer.fit(until=trainer.k1 + trainer.k2)
        trainer.save(args.base)
        print(f"base trained in {time.perf_counter() - started:.0f} s: {json.dumps(trainer.summary())}")
    cfg = QIPOConfig.model_validate(base | json.loads(args.set))
    trainer = QIPOTrainer(data, cfg, progress=False)
    trainer.load_state_dict(load_checkpoint(args.base))
    start = trainer.k1 + trainer.k2
    if trainer.step != start:
        raise SystemExit(f"{args.base} is at step {trainer.step}, not {start}: --base-set must match it")
    ev = Evaluator(data, args.episodes, EVAL_SEED_BASE)
    at = sorted(int(x) for x in args.evals.split(","))
    scales = [float(x) for x in args.noise_scales.split(",")]
    curve: list[dict[str, Any]] = []

    def evaluate(step: int) -> None:
        point: dict[str, Any] = {"improve_step": step}
        for scale in scales:
            pol = trainer.policy("sample", noise_scale=scale)
            key = "sample" if scale == 1 else f"sample@{scale:g}"
            point[key] = ev(step, pol)["return"]
        bon = trainer.policy("best-of-n")
        point["best-of-n"] = ev(step, bon)["return"]
        curve.append(point)
        print(json.dumps({"name": args.name, **point, **(trainer.renewal_log[-1:] or [{}])[0]}), flush=True)

    started = time.perf_counter()
    if 0 in at:
        evaluate(0)
    for step in at:
        if step > 0:
            trainer.fit(until=start + step)
            evaluate(step)
    write_json_atomic(
        record,
        {
            "name": args.name,
            "dataset": str(args.data),
            "overrides": json.loads(args.set),
            "config": cfg.model_dump(mode="json"),
            "curve": curve,
            "diagnostics": trainer.summary(),
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
