"""Latency while models are swapped: p99 in the seconds after each promotion vs steady p99, same run.

Two replicas (real uvicorn processes, 1 ORT thread each) follow one Redis registry; robots act at a fixed
control rate on loopback, each pinned to one replica and pinning its version per episode. After a steady
phase, production is promoted to a *new* version every `--gap` seconds (each swap is a real pull, sha256
check, ORT load and warm-up on both replicas). Requests sent within `--window` s after a promotion are
"during swap"; all others are "steady". Pass: p99(during) <= 2 x p99(steady) and zero failed requests.

    python scripts/bench_swap.py            # writes docs/bench/swap.json and docs/bench/swap.md

The replicas and robots are the end-to-end tests' (tests/e2e/fleet.py), so the bench and the upgrade tests
drive the same fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from loadtests.loadgen import ROOT
from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import FleetResult, Observation, replicas, robot
from tests.service.registry_fixtures import MODEL, build_artifact


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1e3, q)) if latencies else float("nan")


async def drive(
    reg: RedisRegistry, urls: list[str], args: argparse.Namespace, targets: list[int]
) -> FleetResult:
    result = FleetResult()
    out: list[Observation] = []
    robots = [f"robot-{i:02d}" for i in range(args.robots)]
    total = args.steady + len(targets) * args.gap
    stop_at = time.monotonic() + total
    tasks = [
        asyncio.create_task(
            robot(r, urls[i % len(urls)], i % len(urls), stop_at, out, period=1 / args.rate_hz)
        )
        for i, r in enumerate(robots)
    ]
    with tqdm(total=round(total), desc="swap bench", unit="s") as bar:
        await asyncio.sleep(args.steady)
        bar.update(round(args.steady))
        for version in targets:
            move = await asyncio.to_thread(reg.promote, MODEL, "production", version)
            result.moves.append((time.monotonic(), "production", move.to_version))
            await asyncio.sleep(args.gap)
            bar.update(round(args.gap))
    await asyncio.gather(*tasks)
    result.observations = out
    return result


def load_seconds(url: str) -> dict[str, float]:
    """Mean pull + verify + ORT load + warm-up time of one replica, from its own histogram."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("qipo_model_load_seconds_sum", "qipo_model_load_seconds_count"))
    }
    count = values.get("qipo_model_load_seconds_count", 0.0)
    return {"loads": count, "mean_s": values.get("qipo_model_load_seconds_sum", 0.0) / max(count, 1.0)}


def swap_seconds(result: FleetResult) -> list[float]:
    """Per promotion: seconds until every replica has answered with the new version."""
    out = []
    for t, _, version in result.moves:
        per_replica = []
        for rep in {o.replica for o in result.observations}:
            first = [o.received for o in result.observations if o.replica == rep and o.version == version]
            first = [x for x in first if x >= t]
            if first:
                per_replica.append(min(first) - t)
        out.append(max(per_replica) if per_replica else float("nan"))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default=os.environ.get("QIPO_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--robots", type=int, default=32)
    parser.add_argument("--rate-hz", type=float, default=20.0, help="Control rate of each robot")
    parser.add_argument("--steady", type=float, default=10.0, help="Seconds before the first promotion")
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--gap", type=float, default=5.0, help="Seconds between promotions")
    parser.add_argument("--window", type=float, default=1.0, help="Seconds after a promotion counted as swap")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    return parser.parse_args(argv)


def run_fleet(args: argparse.Namespace) -> tuple[FleetResult, list[dict[str, float]]]:
    """Publish swaps + 1 versions to a fresh Redis prefix, run two replicas and the robots, promote a new
    version every `gap` s; the fleet's observations and each replica's model-load histogram."""
    work = Path(tempfile.mkdtemp(prefix="qipo-bench-swap-"))
    prefix = f"qipo-bench-{uuid.uuid4().hex[:8]}"
    reg = RedisRegistry(args.redis, prefix=prefix)
    reg.wait_until_reachable(10)
    try:
        for seed in tqdm(range(1, args.swaps + 2), desc="export + publish"):
            reg.publish(build_artifact(work / f"seed{seed}", seed))
        reg.promote(MODEL, "production", 1)
        targets = list(range(2, args.swaps + 2))  # every promotion loads a version not yet in memory
        with replicas(2, args.redis, prefix, work, poll_seconds=0.5) as reps:
            result = asyncio.run(drive(reg, [r.url for r in reps], args, targets))
            loads = [load_seconds(r.url) for r in reps]
    finally:
        reg.delete_prefix()
        reg.close()
    return result, loads


def summarise(result: FleetResult, loads: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    """swap.json: p50/p99 of requests sent within `window` s after a promotion against all others."""
    windows = [(t, t + args.window) for t, _, _ in result.moves]
    ok = [o for o in result.observations if o.status == 200]
    during = [o.received - o.sent for o in ok if any(a <= o.sent <= b for a, b in windows)]
    steady = [o.received - o.sent for o in ok if not any(a <= o.sent <= b for a, b in windows)]
    p99_steady, p99_swap = percentile_ms(steady, 99), percentile_ms(during, 99)
    ratio = p99_swap / p99_steady
    return {
        "what": "p99 /act latency within `window_s` after each promotion vs steady p99, same run",
        "config": {k: v for k, v in vars(args).items() if k not in ("redis", "out")},
        "replicas": 2,
        "requests": len(result.observations),
        "failed": len(result.failed),
        "steady": {"requests": len(steady), "p50_ms": percentile_ms(steady, 50), "p99_ms": p99_steady},
        "during_swap": {"requests": len(during), "p50_ms": percentile_ms(during, 50), "p99_ms": p99_swap},
        "p99_ratio": ratio,
        "swap_visible_s": swap_seconds(result),
        "replica_model_loads": loads,
        "pass": bool(ratio <= 2.0 and not result.failed),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(report: dict[str, Any]) -> str:
    """swap.md from swap.json."""
    c, machine = report["config"], report["machine"]
    steady, during = report["steady"], report["during_swap"]
    md = [
        "# Latency during model swaps",
        "",
        f"Two replicas, {c['robots']} robots at {c['rate_hz']:g} Hz on loopback, {c['swaps']} promotions to",
        f"new versions every {c['gap']:g} s after {c['steady']:g} s steady; 'during swap' = requests sent",
        f"within {c['window']:g} s after a promotion. Generated by `make bench-swap` ({report['at']}, load",
        f"average {machine['loadavg_1m']:.1f} on {machine['cpus']} CPUs shared with",
        "other jobs). Latency is measured at the robot (a raw keep-alive HTTP/1.1 client), so it includes",
        "the network stack and the client's own scheduling.",
        "",
        "| phase | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| steady | {steady['requests']} | {steady['p50_ms']:.2f} | {steady['p99_ms']:.2f} |",
        f"| during swap | {during['requests']} | {during['p50_ms']:.2f} | {during['p99_ms']:.2f} |",
        "",
        f"**p99 ratio (during / steady): {report['p99_ratio']:.2f}** (target ≤ 2.0) · failed requests: "
        f"{report['failed']} · {'PASS' if report['pass'] else 'FAIL'}",
        "",
        "Seconds from each promotion until both replicas answered with the new version (robots switch at",
        "their next episode start, so this includes the rest of an episode): "
        + ", ".join(f"{s:.2f}" for s in report["swap_visible_s"]),
        "",
        "Model loads per replica (pull + sha256 + ORT load + warm-up, off the request path): "
        + ", ".join(
            f"{int(x['loads'])} loads, mean {x['mean_s'] * 1e3:.0f} ms" for x in report["replica_model_loads"]
        ),
        "",
    ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result, loads = run_fleet(args)
    report = summarise(result, loads, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "swap.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / "swap.md").write_text(md)
    print(md)
    return 0 if report["pass"] else 1
