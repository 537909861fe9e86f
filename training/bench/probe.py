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
from training.data.dataset import TransitionDataset, load_dataset
from training.qipo import QIPOTrainer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    return p.parse_args(argv)


def record_path(out: Path, data: Path, name: str) -> Path:
    """One record per env, dataset and variant: OUT/env__dataset__name.json."""
    return out / f"{data.parent.name}__{data.name}__{name}.json"


def eval_points(evals: str) -> list[int]:
    """--evals as sorted improvement steps."""
    return sorted(int(x) for x in evals.split(","))


def noise_scales(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def sample_key(scale: float) -> str:
    """The curve's key of one-sample-per-state returns at a noise scale (`sample` at the policy's own)."""
    return "sample" if scale == 1 else f"sample@{scale:g}"


def shared_trainer(data: TransitionDataset, base: dict[str, Any], args: argparse.Namespace) -> QIPOTrainer:
    """The improvement phase's trainer, from the shared K1 + K2 checkpoint (trained first if absent)."""
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
    return trainer


def improvement_curve(
    trainer: QIPOTrainer, data: TransitionDataset, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Returns at each --evals point of the improvement phase: one sample per state at each noise scale,
    and best-of-N."""
    ev = Evaluator(data, args.episodes, EVAL_SEED_BASE)
    at = eval_points(args.evals)
    scales = noise_scales(args.noise_scales)
    start = trainer.k1 + trainer.k2
    curve: list[dict[str, Any]] = []

    def evaluate(step: int) -> None:
        point: dict[str, Any] = {"improve_step": step}
        for scale in scales:
            pol = trainer.policy("sample", noise_scale=scale)
            point[sample_key(scale)] = ev(step, pol)["return"]
        bon = trainer.policy("best-of-n")
        point["best-of-n"] = ev(step, bon)["return"]
        curve.append(point)
        print(json.dumps({"name": args.name, **point, **(trainer.renewal_log[-1:] or [{}])[0]}), flush=True)

    if 0 in at:
        evaluate(0)
    for step in at:
        if step > 0:
            trainer.fit(until=start + step)
            evaluate(step)
    return curve


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    record = record_path(args.out, args.data, args.name)
    if record.exists():
        print(f"skip {args.name}: {record} exists")
        return
    data = load_dataset(args.data)
    trainer = shared_trainer(data, json.loads(args.base_set), args)
    started = time.perf_counter()
    curve = improvement_curve(trainer, data, args)
    write_json_atomic(
        record,
        {
            "name": args.name,
            "dataset": str(args.data),
            "overrides": json.loads(args.set),
            "config": trainer.cfg.model_dump(mode="json"),
            "curve": curve,
            "diagnostics": trainer.summary(),
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
