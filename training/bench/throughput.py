"""`make bench-train`: QIPO's steps/s per phase and over the default schedule, against d3rlpy's IQL, TD3+BC
and ReBRAC and against QIPO's own reference path (an earlier commit), all in the same run.

Every measurement is a fresh process with one torch thread (`throughput_worker.py`). The reference path is
the trainer as of `--reference` (a git commit), checked out once into a worktree under build/ and imported
by the same worker, so "speed-up" means the same phases, the same data and the same machine state. The
processes run in rounds (reference, current, each peer) and the medians are reported, so a change of
machine load hits every column alike. A profile of each phase splits its wall time into matmul kernels,
the optimiser, other ATen ops, autograd/dispatch and Python, and counts its matmul FLOPs: with this core's
measured GEMM rate that gives the arithmetic floor of a step, what no removal of overhead can beat.

The schedule's rate weights each phase by its default step count (K1 behaviour, K2 critic, K3
improvement) and adds the default number of renewals at their measured cost.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.bench import cpu_model
from training.bench.peers import PEERS
from training.config import QIPOConfig

WORKER = Path(__file__).with_name("throughput_worker.py")
ROOT = Path(__file__).resolve().parents[2]
# main just before the batched critic heads: the path the speed-ups are measured against
REFERENCE_COMMIT = "1fb106d"
PHASE_OF = {"behavior": "behavior", "critic": "critic-iql", "improve": "improve-full"}  # the defaults'


def reference_tree(commit: str, root: Path = ROOT) -> Path:
    """A worktree of `commit` under build/ (made once, reused): the reference trainer's source."""
    tree = root / "build" / f"bench-reference-{commit}"
    if not (tree / "training" / "qipo.py").exists():
        subprocess.run(["git", "-C", str(root), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--force", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
    return tree


def run_worker(args: Sequence[str], tree: Path) -> dict[str, Any]:
    """One worker process importing `training` from `tree`; its JSON result."""
    env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed in {tree}:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def schedule(cfg: QIPOConfig) -> dict[str, int]:
    return {"behavior": cfg.behavior_steps, "critic": cfg.critic_steps, "improve": cfg.improve_steps}


def renewals(cfg: QIPOConfig) -> int:
    return -(-cfg.improve_steps // cfg.renew_every) if cfg.improve_steps else 0


def schedule_rate(cfg: QIPOConfig, rates: dict[str, float], renewal_s: float) -> float:
    """Steps/s of the whole default schedule: each phase at its rate, plus the renewals' own cost."""
    steps = schedule(cfg)
    seconds = sum(n / rates[PHASE_OF[p]] for p, n in steps.items()) + renewals(cfg) * renewal_s
    return sum(steps.values()) / seconds


def median_of(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {p: statistics.median(r[key][p] for r in runs) for p in runs[0][key]}


def measure(
    rounds: int, steps: int, size: int, reference: str, peers: Sequence[str], log: Any = print
) -> dict[str, Any]:
    tree = reference_tree(reference)
    qipo_args = ["qipo", "--steps", str(steps), "--size", str(size)]
    ref_runs: list[dict[str, Any]] = []
    cur_runs: list[dict[str, Any]] = []
    peer_runs: dict[str, list[float]] = {p: [] for p in peers}
    peer_batch: dict[str, int] = {}
    load_start = os.getloadavg()[0]
    for r in range(rounds):
        ref_runs.append(run_worker(qipo_args, tree))
        cur_runs.append(run_worker([*qipo_args, *(["--profile"] if r == 0 else [])], ROOT))
        for p in peers:
            out = run_worker(["peer", p, "--steps", str(steps), "--size", str(size)], ROOT)
            peer_runs[p].append(out["steps_per_s"])
            peer_batch[p] = out["batch_size"]
        log(
            f"round {r}: reference {ref_runs[-1]['steps_per_s']}, current {cur_runs[-1]['steps_per_s']}, "
            f"peers { {p: round(v[-1], 1) for p, v in peer_runs.items()} }"
        )
    cfg = QIPOConfig()
    cur = median_of(cur_runs, "steps_per_s")
    ref = median_of(ref_runs, "steps_per_s")
    cur_renewal = statistics.median(r["renewal_s"] for r in cur_runs)
    ref_renewal = statistics.median(r["renewal_s"] for r in ref_runs)
    gflops = statistics.median(r["gemm_gflops"] for r in cur_runs)
    peer_rates = {p: statistics.median(v) for p, v in peer_runs.items()}
    qipo_rate = schedule_rate(cfg, cur, cur_renewal)
    ref_rate = schedule_rate(cfg, ref, ref_renewal)
    profile = cur_runs[0]["profile"]
    floor = {p: gflops / prof["gflop_per_step"] for p, prof in profile.items()}
    return {
        "schedule": schedule(cfg) | {"renewals": renewals(cfg)},
        "qipo_schedule_steps_per_s": round(qipo_rate, 1),
        "reference_schedule_steps_per_s": round(ref_rate, 1),
        "schedule_speedup": round(qipo_rate / ref_rate, 3),
        "peer_steps_per_s": {p: round(v, 1) for p, v in peer_rates.items()},
        "peer_batch_size": peer_batch,
        "ratio_to_peer": {p: round(qipo_rate / v, 3) for p, v in peer_rates.items()},
        "phase_steps_per_s": {p: round(v, 1) for p, v in cur.items()},
        "reference_phase_steps_per_s": {p: round(v, 1) for p, v in ref.items()},
        "phase_speedup": {p: round(cur[p] / ref[p], 3) for p in cur},
        "renewal_s": round(cur_renewal, 3),
        "reference_renewal_s": round(ref_renewal, 3),
        "profile": profile,
        "gemm_gflops": round(gflops, 1),
        "arithmetic_floor_steps_per_s": {p: round(v, 1) for p, v in floor.items()},
        "share_of_floor": {p: round(cur[p] / floor[p], 3) for p in cur},
        "rounds": rounds,
        "steps_per_block": steps,
        "dataset_size": size,
        "reference_commit": reference,
        "config": cfg.model_dump(mode="json"),
        "threads": 1,
        "machine": f"{platform.machine()}, {cpu_model()}, torch {torch.__version__}",
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
    }


def markdown(r: dict[str, Any]) -> str:
    net = r["config"]["network"]
    sched = r["schedule"]
    lines = [
        "# Training throughput: QIPO's phases, its reference path and d3rlpy's peers (same run)",
        "",
        f"One torch thread per process, HalfCheetah dimensions (obs 17, act 6), synthetic "
        f"{r['dataset_size']:,}-transition dataset, {r['steps_per_block']} timed steps per block, medians "
        f"of {r['rounds']} rounds (reference, current, each peer in turn). Machine: {r['machine']}; "
        f"1-min load {r['load_average_1min']['start']} → {r['load_average_1min']['end']}. Critic: twin Q, "
        f"{net['critic_layers']} × {net['critic_hidden']}; velocity net {net['hidden']} wide × "
        f"{net['blocks']} residual blocks. Reference: commit `{r['reference_commit']}`.",
        "",
        f"## Whole default schedule (K1 {sched['behavior']:,} / K2 {sched['critic']:,} / K3 "
        f"{sched['improve']:,}, {sched['renewals']} renewals)",
        "",
        "| | steps/s | QIPO / this |",
        "|---|---|---|",
        f"| **QIPO (current)** | **{r['qipo_schedule_steps_per_s']}** | 1 |",
        f"| QIPO reference path | {r['reference_schedule_steps_per_s']} | {r['schedule_speedup']}× |",
    ]
    for p, v in r["peer_steps_per_s"].items():
        lines.append(f"| d3rlpy {p} (batch {r['peer_batch_size'][p]}) | {v} | {r['ratio_to_peer'][p]}× |")
    lines += [
        "",
        "## Each phase",
        "",
        "| phase | steps/s | reference | speed-up | GFLOP/step | arithmetic floor | share of floor | "
        "matmul | optimiser | other ops | autograd | Python |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, v in r["phase_steps_per_s"].items():
        prof = r["profile"][p]
        lines.append(
            f"| {p} | {v} | {r['reference_phase_steps_per_s'][p]} | {r['phase_speedup'][p]}× | "
            f"{prof['gflop_per_step']} | {r['arithmetic_floor_steps_per_s'][p]} | "
            f"{r['share_of_floor'][p]:.0%} | {prof['matmul']:.0%} | {prof['optimizer']:.0%} | "
            f"{prof['other_ops']:.0%} | {prof['autograd_dispatch']:.0%} | {prof['python']:.0%} |"
        )
    lines += [
        "",
        f"One renewal (freeze, the temperature probe's support sets, diagnostics): {r['renewal_s']} s "
        f"(reference {r['reference_renewal_s']} s). The lazy renewal's sampling is inside the improvement "
        "steps' rate.",
        "",
        f"The arithmetic floor is the step's matmul FLOPs at this core's measured float32 GEMM rate "
        f"({r['gemm_gflops']} GFLOP/s at 256³): a step cannot run faster on this core in float32 without "
        "doing less arithmetic.",
        "",
        "Regenerate: `make bench-train`.",
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "train.md").write_text(markdown(result))


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per phase and block")
    parser.add_argument("--size", type=int, default=20_000, help="transitions in the synthetic dataset")
    parser.add_argument("--reference", default=REFERENCE_COMMIT, help="commit of the reference path")
    parser.add_argument("--peers", nargs="*", default=list(PEERS))
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.steps, args.size, args.reference, args.peers)
    write(result, args.out)
    print(markdown(result))
