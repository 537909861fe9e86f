"""Offline RL results: BC vs QIPO-OT vs QIPO-Diff, several seeds, on Pendulum `mixed` or MuJoCo datasets.

For each dataset, variant and seed one run: the behaviour warm-up (K1 plain flow matching / diffusion steps)
is evaluated as BC, then the same run continues with the critic and policy improvement and is evaluated as
QIPO, so BC and QIPO share data, seed and behaviour policy. Rows are written as they finish, so a long
run that is stopped keeps what it measured.

    python scripts/bench_rl.py                       # Pendulum mixed → docs/bench/pendulum.{json,md}
    python scripts/bench_rl.py --env hopper --kinds medium medium-expert --seeds 0 --variants qipo-ot
                                                     # data/hopper/*-v0 → docs/bench/mujoco-hopper.{json,md}
    (the MuJoCo grid against its own BC and the d3rlpy peers is scripts/bench_grid.py)
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import QIPOConfig
from training.data import load_dataset
from training.data.dataset import TransitionDataset
from training.data.pendulum import make_pendulum_datasets
from training.eval import evaluate
from training.qipo import QIPOTrainer

# Pendulum (20k transitions): the tier-0 budgets. The diffusion behaviour policy needs a longer warm-up
# (3k steps left it at −881 and one seed gained little), so QIPO-Diff gets 6k warm-up + 2k improvement.
PENDULUM: dict[str, Any] = {
    "behavior_steps": 3000,
    "critic_steps": 2500,
    "improve_steps": 1500,
    "renew_every": 500,
    "beta": 3.0,
    "support_size": 16,
    "critic_support": 16,
    "reward_scale": 0.1,
    "critic_kind": "softmax-q",
    "critic_grad_clip": 10.0,
    "temperature": "raw",
    "network": {"hidden": 128, "blocks": 2, "critic_layers": 2},
}
# MuJoCo (~200k transitions): the library defaults (K1 = K2 = 10k, K3 = 6k, renewal every 2k), with
# IQL's locomotion reward scaling (1000 / return spread of the dataset).
MUJOCO: dict[str, Any] = {"reward_scale": "auto"}
VARIANT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "pendulum": {"qipo-diff": {"behavior_steps": 6000, "improve_steps": 2000}},
}
QUICK = {"behavior_steps": 300, "critic_steps": 200, "improve_steps": 100, "renew_every": 50}


def run_config(env: str, variant: str, seed: int, quick: bool, extra: dict[str, Any]) -> QIPOConfig:
    base = PENDULUM if env == "pendulum" else MUJOCO
    per_variant = VARIANT_OVERRIDES.get(env, {}).get(variant, {})
    merged = base | per_variant | extra | (QUICK if quick else {})
    return QIPOConfig.model_validate(merged | {"variant": variant, "seed": seed})


def run_one(
    data: TransitionDataset, kind: str, cfg: QIPOConfig, episodes: int, threads: int
) -> dict[str, Any]:
    assert data.env_id, "datasets used here name their env"
    trainer = QIPOTrainer(data, cfg, progress=False)
    refs = data.ref_scores
    own = (refs["ref_min_score"], refs["ref_max_score"]) if len(refs) == 2 else None
    eval_seed = 10_000 + 100 * cfg.seed

    def score() -> dict[str, Any]:
        policy = trainer.policy()
        return evaluate(policy, data.env_id or "", episodes, seed=eval_seed, own_refs=own, progress=False)

    started = time.perf_counter()
    trainer.fit(until=trainer.k1)
    bc_s = time.perf_counter() - started
    bc = score()
    started = time.perf_counter()
    trainer.fit()
    qipo_s = time.perf_counter() - started
    qipo = score()
    row = {
        "dataset": kind,
        "variant": cfg.variant,
        "seed": cfg.seed,
        "bc_return": bc["mean_return"],
        "qipo_return": qipo["mean_return"],
        "bc_normalized": bc["normalized_score"],
        "qipo_normalized": qipo["normalized_score"],
        "bc_d4rl_style": bc["d4rl_style_score"],
        "qipo_d4rl_style": qipo["d4rl_style_score"],
        "bc_train_s": round(bc_s, 1),
        "qipo_train_s": round(qipo_s, 1),
        "renewal_s": trainer.renewal_s,
        "threads": threads,
        "config": cfg.model_dump(mode="json"),
    }
    print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    return row


def stats(vals: list[float | None]) -> dict[str, float] | None:
    if not vals or any(v is None for v in vals):
        return None
    arr = np.array(vals, dtype=float)
    return {"mean": round(float(arr.mean()), 1), "std": round(float(arr.std()), 1), "n": len(arr)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, variant in sorted({(r["dataset"], r["variant"]) for r in rows}):
        mine = [r for r in rows if r["dataset"] == kind and r["variant"] == variant]
        out[f"{kind}/{variant}"] = {
            f"{algo}_{metric}": stats([r[f"{algo}_{metric}"] for r in mine])
            for algo in ("bc", "qipo")
            for metric in ("return", "normalized", "d4rl_style")
        }
    return out


def _cell(s: dict[str, float] | None) -> str:
    return "–" if s is None else f"{s['mean']:.1f} ± {s['std']:.1f}"


def _best(mine: dict[str, float] | None, other: dict[str, float] | None) -> str:
    """The cell, in bold when its mean is the higher of the two."""
    better = mine is not None and other is not None and mine["mean"] > other["mean"]
    return f"**{_cell(mine)}**" if better else _cell(mine)


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    env = result["env"]
    lines = [
        f"# {result['env_id']}: BC vs QIPO-OT vs QIPO-Diff",
        "",
        "Each run is evaluated after its behaviour warm-up (BC) and again after critic + improvement (QIPO): "
        f"{result['episodes']} evaluation episodes per run, seeds {result['seeds']}, "
        f"{result['threads']} torch thread(s). Normalised scores: *own* = 0 at our random and 100 at our "
        "expert reference (the generator's policies); *D4RL-style* = D4RL v2 refs on a gymnasium v5 env "
        "(comparable in spirit only).",
        "",
        "Datasets:",
        "",
    ]
    for kind, d in result["datasets"].items():
        lines.append(
            f"- `{kind}`: {d['transitions']} transitions, {d['episodes']} episodes, "
            f"sha256 `{d['sha256'][:12]}…`"
        )
    lines += [
        "",
        "| dataset | variant | BC return | QIPO return | BC own | QIPO own | BC D4RL-style "
        "| QIPO D4RL-style |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, s in result["summary"].items():
        kind, variant = key.split("/")
        lines.append(
            f"| {kind} | {variant} | {_best(s['bc_return'], s['qipo_return'])} "
            f"| {_best(s['qipo_return'], s['bc_return'])} "
            f"| {_cell(s['bc_normalized'])} | {_cell(s['qipo_normalized'])} "
            f"| {_cell(s['bc_d4rl_style'])} | {_cell(s['qipo_d4rl_style'])} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| dataset | variant | seed | BC | QIPO | train s (BC / rest) | renewal s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['seed']} | {r['bc_return']:.1f} "
            f"| {r['qipo_return']:.1f} "
            f"| {r['bc_train_s']} / {r['qipo_train_s']} | {', '.join(str(x) for x in r['renewal_s'])} |"
        )
    base = PENDULUM if env == "pendulum" else MUJOCO
    lines += [
        "",
        f"Config: `{json.dumps(base | result['config_overrides'])}` over the `QIPOConfig` defaults; per "
        f"variant: `{json.dumps(VARIANT_OVERRIDES.get(env, {}))}`; solver per variant: euler×10 (OT), "
        "dpm-solver-2×8 (diff). Full configs are in the JSON beside this file.",
        f"Machine: {result['machine']}. Regenerate with `{result['command']}`.",
        "",
    ]
    path.write_text("\n".join(lines))


def datasets_for(env: str, kinds: list[str], data: Path) -> dict[str, Path]:
    if env == "pendulum":
        return {"mixed": make_pendulum_datasets(data.resolve(), ("mixed",), 100, 0)["mixed"]}
    out = {}
    for kind in kinds:
        path = data / env / f"{kind}-v0"
        if not path.exists():
            raise SystemExit(f"{path} not found: generate it with `qipo data make {env} --out {data}`")
        out[kind] = path
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="pendulum", choices=["pendulum", "hopper", "halfcheetah"])
    parser.add_argument("--kinds", nargs="+", default=["medium", "medium-expert", "medium-replay", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["qipo-ot", "qipo-diff"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset root (default: build/bench-rl/data, MuJoCo: data)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test of the script)")
    parser.add_argument("--set", default="{}", help="JSON merged into every run's config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None, help="output file stem (default: pendulum / mujoco-<env>)")
    return parser.parse_args(argv)


def data_root(args: argparse.Namespace) -> Path:
    return args.data or Path("build/bench-rl/data" if args.env == "pendulum" else "data")


def file_stem(args: argparse.Namespace) -> str:
    """pendulum / mujoco-<env> unless --name says otherwise; `-quick` after it for a --quick run."""
    name = args.name or ("pendulum" if args.env == "pendulum" else f"mujoco-{args.env}")
    return name + ("-quick" if args.quick else "")


def result_record(
    args: argparse.Namespace,
    loaded: dict[str, TransitionDataset],
    extra: dict[str, Any],
    rows: list[dict[str, Any]],
    argv: list[str],
) -> dict[str, Any]:
    """What {name}.json holds after the runs so far."""
    return {
        "env": args.env,
        "env_id": next(iter(loaded.values())).env_id,
        "datasets": {k: d.describe() for k, d in loaded.items()},
        "seeds": args.seeds,
        "episodes": args.episodes,
        "threads": args.threads,
        "quick": args.quick,
        "config_overrides": extra,
        "summary": summarise(rows),
        "runs": rows,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "command": "python scripts/bench_rl.py " + shlex.join(argv),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = datasets_for(args.env, args.kinds, data_root(args))
    extra = json.loads(args.set)
    name = file_stem(args)
    args.out.mkdir(parents=True, exist_ok=True)
    loaded = {kind: load_dataset(path) for kind, path in paths.items()}
    rows: list[dict[str, Any]] = []
    for kind, data in loaded.items():
        for variant in args.variants:
            for seed in args.seeds:
                cfg = run_config(args.env, variant, seed, args.quick, extra)
                rows.append(run_one(data, kind, cfg, args.episodes, args.threads))
                result = result_record(args, loaded, extra, rows, argv)
                (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
                write_markdown(args.out / f"{name}.md", result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
