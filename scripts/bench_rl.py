"""Pendulum `mixed`, 3 seeds: BC vs QIPO-OT vs QIPO-Diff (DESIGN §4.3 tier 0).

For each variant and seed one run: the behaviour warm-up (K1 plain flow matching / diffusion steps) is
evaluated as BC, then the same run continues with the critic and policy improvement and is evaluated as
QIPO, so BC and QIPO share data, seed and behaviour policy. Writes docs/bench/pendulum.json and .md.

    python scripts/bench_rl.py [--seeds 0 1 2] [--out docs/bench] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import QIPOConfig
from training.data import load_dataset
from training.data.pendulum import make_pendulum_datasets
from training.eval import evaluate
from training.qipo import QIPOTrainer

BASE: dict[str, Any] = {
    "behavior_steps": 3000,
    "critic_steps": 2500,
    "improve_steps": 1500,
    "renew_every": 500,
    "beta": 3.0,
    "support_size": 16,
    "critic_support": 16,
    "reward_scale": 0.1,
    "network": {"hidden": 128, "blocks": 2, "critic_layers": 2},
}


def run_one(
    dataset_dir: Path, variant: str, seed: int, episodes: int, quick: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    overrides = {"behavior_steps": 300, "critic_steps": 200, "improve_steps": 100, "renew_every": 50}
    base = BASE | extra | (overrides if quick else {})
    cfg = QIPOConfig.model_validate(base | {"variant": variant, "seed": seed})
    trainer = QIPOTrainer(load_dataset(dataset_dir), cfg, progress=False)
    eval_seed = 10_000 + 100 * seed
    started = time.perf_counter()
    trainer.fit(until=trainer.k1)
    bc_s = time.perf_counter() - started
    bc = evaluate(trainer.policy().act_numpy, "Pendulum-v1", episodes, seed=eval_seed, progress=False)
    started = time.perf_counter()
    trainer.fit()
    qipo_s = time.perf_counter() - started
    qipo = evaluate(trainer.policy().act_numpy, "Pendulum-v1", episodes, seed=eval_seed, progress=False)
    row = {
        "variant": variant,
        "seed": seed,
        "bc_return": bc["mean_return"],
        "qipo_return": qipo["mean_return"],
        "bc_train_s": round(bc_s, 1),
        "qipo_train_s": round(qipo_s, 1),
        "renewal_s": trainer.renewal_s,
        "config": cfg.model_dump(mode="json"),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for variant in sorted({r["variant"] for r in rows}):
        for key in ("bc_return", "qipo_return"):
            vals = np.array([r[key] for r in rows if r["variant"] == variant])
            out[f"{variant}/{key.removesuffix('_return')}"] = {
                "mean": round(float(vals.mean()), 1),
                "std": round(float(vals.std()), 1),
                "n": len(vals),
            }
    return out


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    lines = [
        "# Pendulum `mixed`: BC vs QIPO-OT vs QIPO-Diff",
        "",
        f"Dataset: {result['dataset']['transitions']} transitions, {result['dataset']['episodes']} episodes "
        f"(20% scripted expert, 80% ε=0.7), sha256 `{result['dataset']['sha256'][:12]}…`. "
        f"{result['episodes']} evaluation episodes per run, seeds {result['seeds']}, 1 torch thread.",
        "Each run is evaluated after its behaviour warm-up (BC) and again after critic + improvement (QIPO).",
        "",
        "| variant | BC return (mean ± std) | QIPO return (mean ± std) | QIPO − BC |",
        "|---|---|---|---|",
    ]
    summary = result["summary"]
    for variant in ("qipo-ot", "qipo-diff"):
        bc, q = summary.get(f"{variant}/bc"), summary.get(f"{variant}/qipo")
        if bc and q:
            lines.append(
                f"| {variant} | {bc['mean']:.1f} ± {bc['std']:.1f} | {q['mean']:.1f} ± {q['std']:.1f} "
                f"| {q['mean'] - bc['mean']:+.1f} |"
            )
    lines += [
        "",
        "Per run:",
        "",
        "| variant | seed | BC | QIPO | train s (BC / rest) | renewal s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['bc_return']:.1f} | {r['qipo_return']:.1f} "
            f"| {r['bc_train_s']} / {r['qipo_train_s']} | {', '.join(str(x) for x in r['renewal_s'])} |"
        )
    lines += [
        "",
        f"Config (shared): `{json.dumps(BASE | result['config_overrides'])}`; "
        "solver per variant: euler×10 (OT), dpm-solver-2×8 (diff).",
        f"Machine: {result['machine']}; scripted refs: random −1207, expert −146.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["qipo-ot", "qipo-diff"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--data", type=Path, default=Path("build/bench-rl/data"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test of the script)")
    parser.add_argument("--set", default="{}", help="JSON merged into the shared config, e.g. longer budgets")
    parser.add_argument("--name", default=None, help="output file stem (default: pendulum)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset_dir = make_pendulum_datasets(args.data.resolve(), ("mixed",), 100, 0)["mixed"]
    extra = json.loads(args.set)
    rows = [
        run_one(dataset_dir, v, s, args.episodes, args.quick, extra)
        for v in args.variants
        for s in args.seeds
    ]
    result = {
        "env_id": "Pendulum-v1",
        "dataset": load_dataset(dataset_dir).describe(),
        "seeds": args.seeds,
        "episodes": args.episodes,
        "quick": args.quick,
        "config_overrides": extra,
        "summary": summarise(rows),
        "runs": rows,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("pendulum-quick" if args.quick else "pendulum")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(args.out / f"{name}.md", result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
