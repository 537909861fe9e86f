"""Offline-RL grid: QIPO-OT (with its BC warm-up and best-of-N) vs d3rlpy IQL and TD3+BC on the same datasets.

`run` trains every selected (algo, env, dataset, seed) whose record is missing under --out and writes one
JSON per result as it finishes (a qipo-ot run writes bc, qipo-ot and qipo-ot-bon); separate processes
with disjoint selections can share --out. `summarise` reads every record and writes rl.{json,md,png}.

    python scripts/bench_grid.py run --envs hopper --algos qipo-ot --seeds 0 1 2
    python scripts/bench_grid.py run --envs hopper --algos iql td3bc --seeds 0 1 2
    python scripts/bench_grid.py summarise          # docs/bench/rl-runs/*.json → docs/bench/rl.{json,md,png}
    python scripts/bench_grid.py run --quick --data DIR   # smoke test: 60 steps, 2 episodes
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from training.bench.grid import ALGOS, DATASETS, GridError, GridSettings, plan, run_grid
from training.bench.summary import load_records, write_summary
from training.data.suite import FAMILIES

RUNS = Path("docs/bench/rl-runs")
QUICK_RUNS = Path("build/bench-grid-quick")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate the selected runs that have no record yet")
    run.add_argument("--envs", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    run.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=list(DATASETS),
        help="default: each env's suite datasets (training/data/suite.py)",
    )
    run.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument(
        "--steps", type=int, default=None, help="total gradient steps per run (default: QIPO's K1+K2+K3)"
    )
    run.add_argument(
        "--set", default="{}", help="JSON merged into every QIPOConfig (the peers get its budget)"
    )
    run.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default 10; --quick 2)")
    run.add_argument(
        "--evals", type=int, default=None, help="evaluation points per curve (default 5; --quick 2)"
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {GridSettings.smoke().steps} steps, writes to {QUICK_RUNS}",
    )
    run.add_argument("--threads", type=int, default=1, help="torch threads (torch.set_num_threads)")
    run.add_argument("--data", type=Path, default=Path("data"), help="dataset root: DATA/<env>/<dataset>-v0")
    run.add_argument("--out", type=Path, default=None, help=f"record folder (default {RUNS})")
    summ = sub.add_parser("summarise", help="records → rl.json, rl.md, rl.png")
    summ.add_argument("--runs", type=Path, default=RUNS, help="record folder")
    summ.add_argument("--out", type=Path, default=Path("docs/bench"))
    return parser


def grid_settings(args: argparse.Namespace, command: str) -> GridSettings:
    """The `run` command's budget, evaluation and overrides (--quick: the smoke settings)."""
    overrides = json.loads(args.set)
    if not isinstance(overrides, dict):
        raise GridError(f"--set must be a JSON object, got {args.set!r}")
    changes: dict[str, Any] = {"overrides": overrides, "command": command}
    changes |= {k: v for k in ("steps", "episodes", "evals") if (v := getattr(args, k)) is not None}
    return GridSettings.smoke(**changes) if args.quick else GridSettings(**changes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = "python scripts/bench_grid.py " + shlex.join(argv)
    try:
        if args.command == "summarise":
            paths = write_summary(load_records(args.runs), args.out, command)
            print("\n".join(str(p) for p in paths.values()))
            return 0
        torch.set_num_threads(args.threads)
        settings = grid_settings(args, command)
        specs = plan(args.algos, args.envs, args.datasets, args.seeds)
        out = args.out or (QUICK_RUNS if args.quick else RUNS)
        written = run_grid(specs, args.data, out, settings)
        print(f"{len(written)} record(s) written under {out}")
        return 0
    except (GridError, FileNotFoundError, ValueError) as exc:  # ValueError: bad JSON, bad config values
        print(f"bench_grid: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
