"""`make bench-serve` (`scripts/bench_serve.py`): the real server against a no-model floor, in one run, on
loopback; plus the fused ONNX sampler against torch eager.

- floor: a FastAPI app with the same route, body parsing (orjson) and reply shape, but no model, no
  validation and no batching: what this box can answer at all with FastAPI + uvicorn.
- qipo: `service.app.create_app` serving a published artifact (micro-batcher, validation, metrics).
Both run under real uvicorn (uvloop + httptools, no access log) in their own process; the load generator
is a raw-socket asyncio client with N keep-alive connections, each sending the next request as soon as the
last reply arrived (closed loop), for a bounded time per level.

Writes docs/bench/serve.json, serve.md and serve.png. Ratios are against the floor of the same run, so
they hold on other boxes even where absolute numbers do not. torch is used here only (never in service/).

`--profile` adds one more 1-client level per server with py-spy (a sampling profiler outside the server
process: no instrumentation inside it, so small functions are not inflated) attached to the server, and
writes serve-profile-run.md (top-N functions and packages by CPU µs per request) plus the collapsed stacks
(serve-profile-<server>.collapsed, flame-graph input) next to the results. The profiled level is extra:
the recorded numbers of the table never run under the profiler.

`--inproc-only` skips the sockets: only the in-process part (each app called directly, thread CPU time) and
the ONNX sampler at batch 1 and 64, written to serve-inproc.md / serve-inproc.json (and, with `--profile`,
serve-profile-inproc-run.md): cheap enough to measure one change at a time on a shared box, and robust to
other load. `--inproc-requests N` sets how many requests each in-process level runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests.inproc import INPROC_REQUESTS, Spec, inproc_costs
from loadtests.loadgen import ROOT, load_with_cpu, scrape_batches, start_server, stop_server
from loadtests.sampler import ARCHS, SAMPLER_BATCHES, bench_sampler, build_artifact
from loadtests.serve_profile import load_profiled, profile_markdown, py_spy, summarize_profile
from loadtests.serve_report import (
    add_inproc_overhead,
    add_overhead,
    chunk_rows,
    inproc_markdown,
    ratios,
    write_report,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--servers",
        default="default:inline,default:thread,small:inline,small:thread,chunk8:inline",
        help=f"qipo servers as arch:executor (arch in {','.join(ARCHS)}; executor inline|thread)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile every server at 1 client with py-spy: serve-profile-run.md + collapsed stacks",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also serve the first --servers entry with the `service` package of this source tree (e.g. an "
        "older commit's, from `git archive`), so a change is measured against it in the same run",
    )
    parser.add_argument(
        "--inproc-only",
        action="store_true",
        help="no sockets: only the in-process apps (thread CPU) and the ONNX sampler at batch 1 and 64, "
        "into serve-inproc.md/json (with --profile: serve-profile-inproc-run.md)",
    )
    parser.add_argument(
        "--inproc-repeats",
        type=int,
        default=1,
        help="run every in-process app this many times, in turn, and keep the medians (a shared box)",
    )
    parser.add_argument(
        "--inproc-requests",
        type=int,
        default=INPROC_REQUESTS,
        help="requests per in-process level (one at a time, then 64 at once)",
    )
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "service" / "app.py").exists():
        raise SystemExit(f"--baseline {args.baseline} has no service/app.py; give a source tree's root")
    if args.profile:
        py_spy()  # fail before the long part when it is missing
    return args


def server_specs(variants: list[str], baseline: Path | None) -> dict[str, Spec]:
    """name -> (kind of record, arch, executor, where `service` is imported from); the baseline serves the
    first variant from its own tree."""
    specs: dict[str, Spec] = {}
    for v in variants:
        arch, executor = v.split(":")
        specs[v] = ("qipo", arch, executor, ROOT)
    if baseline is not None:
        arch, executor = variants[0].split(":")
        specs[f"baseline:{variants[0]}"] = ("baseline", arch, executor, baseline.resolve())
    return specs


def publish_archs(
    tmp: Path, archs: list[str], batches: tuple[int, ...] = SAMPLER_BATCHES, torch_too: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Per arch: export an artifact, time its sampler, publish it as production in registry-<arch>."""
    from service.registry import open_registry

    sampler: dict[str, list[dict[str, Any]]] = {}
    for arch in archs:
        art = tmp / f"artifact-{arch}"
        policy = build_artifact(art, ARCHS[arch])
        sampler[arch] = bench_sampler(policy, art, batches, torch_too=torch_too)
        reg = open_registry(str(tmp / f"registry-{arch}"), "qipo")
        mv = reg.publish(art)
        reg.promote(mv.name, "production", mv.version)
    return sampler


def run_meta(args: argparse.Namespace, loadavg_at_start: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": os.getloadavg(),
        "duration_s": 0 if args.inproc_only else args.duration,
        "inproc_requests": args.inproc_requests,
        "inproc_repeats": args.inproc_repeats,
        "baseline": None if args.baseline is None else str(args.baseline),
    }


def inproc_only(args: argparse.Namespace) -> None:
    """`--inproc-only`: the in-process apps and the sampler at batch 1 and 64; no sockets, no torch timing."""
    loadavg_at_start = os.getloadavg()
    variants = [v.strip() for v in args.servers.split(",") if v.strip().endswith(":inline")]
    archs = sorted({v.split(":")[0] for v in variants})
    specs = server_specs(variants, args.baseline)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_path = Path(tmp)
        sampler = publish_archs(tmp_path, archs, (1, 64), torch_too=False)
        args.out.mkdir(parents=True, exist_ok=True)
        inproc = inproc_costs(
            specs, tmp_path, args.out if args.profile else None, args.inproc_requests, args.inproc_repeats
        )
    add_inproc_overhead(inproc, sampler)
    profiles = {
        f"in process, one request at a time: {k}": v.pop("profile")
        for k, v in inproc.items()
        if "profile" in v
    }
    meta = run_meta(args, loadavg_at_start)
    result = {"meta": meta, "inproc": inproc, "sampler": sampler}
    (args.out / "serve-inproc.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve-inproc.md").write_text(inproc_markdown(result))
    print((args.out / "serve-inproc.md").read_text())
    write_profiles(args.out, "serve-profile-inproc-run", profiles, meta)


def write_profiles(out: Path, stem: str, profiles: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    if profiles:
        (out / f"{stem}.json").write_text(json.dumps(profiles, indent=2) + "\n")
        (out / f"{stem}.md").write_text(profile_markdown(profiles, meta))
        print((out / f"{stem}.md").read_text())


Servers = dict[str, tuple[subprocess.Popen[bytes], int]]


def measure_level(
    servers: Servers, specs: dict[str, Spec], name: str, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One server at one client count: req/s, latency, mean batch (from /metrics) and server CPU µs/req."""
    proc, port = servers[name]
    before = scrape_batches(port) if name != "floor" else (0.0, 0.0)
    res, cpu = asyncio.run(load_with_cpu(proc.pid, port, clients, args.warmup, args.duration))
    after = scrape_batches(port) if name != "floor" else (0.0, 0.0)
    calls = after[1] - before[1]
    kind, arch, executor, _ = specs.get(name, ("floor", None, None, ROOT))
    horizon = ARCHS[arch].horizon if arch else 1  # the floor answers one action
    return {
        "server": kind,
        "model": arch,
        "executor": executor,
        "clients": clients,
        "rps": res["rps"],
        "action_horizon": horizon,
        "actions_per_s": res["rps"] * horizon,
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "mean_batch": None if name == "floor" else (after[0] - before[0]) / calls if calls else None,
        "server_cpu_us_per_req": cpu * 1e6 / max(res["requests"], 1),
        "requests": res["requests"],
        "errors": res["errors"],
    }


def profile_servers(
    servers: Servers, names: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """One more 1-client level per server with py-spy attached (never one of the recorded levels)."""
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for name in tqdm(names, desc="profile", unit="server"):
        proc, port = servers[name]
        raw = args.out / f"serve-profile-{name.replace(':', '-')}.collapsed"
        res, cpu = asyncio.run(load_profiled(proc.pid, port, 1, args.warmup, args.duration, raw))
        profiles[name] = summarize_profile(raw, cpu * 1e6 / max(res["requests"], 1))
        profiles[name]["requests"] = res["requests"]
    return profiles


def socket_levels(
    tmp: Path, specs: dict[str, Spec], levels: list[int], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every server under uvicorn, loaded in turn at each client count (drift hits all alike); with
    --profile, the profiled levels after them."""
    from tqdm import tqdm

    servers: Servers = {}
    records = []
    profiles: dict[str, dict[str, Any]] = {}
    try:
        servers["floor"] = start_server("floor", tmp, tmp / "cache-floor", "inline")
        for name, (_, arch, executor, src) in specs.items():
            registry, cache = tmp / f"registry-{arch}", tmp / f"cache-{name}"
            servers[name] = start_server("qipo", registry, cache, executor or "inline", src)
        plan = [(c, name) for c in levels for name in ["floor", *specs]]
        for clients, name in tqdm(plan, desc="bench-serve", unit="level"):
            records.append(measure_level(servers, specs, name, clients, args))
        if args.profile:
            profiles = profile_servers(servers, ["floor", *specs], args)
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    return records, profiles


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.inproc_only:
        inproc_only(args)
        return
    loadavg_at_start = os.getloadavg()
    levels = [int(c) for c in args.clients.split(",")]
    variants = [v.strip() for v in args.servers.split(",") if v.strip()]
    archs = sorted({v.split(":")[0] for v in variants})
    specs = server_specs(variants, args.baseline)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_path = Path(tmp)
        sampler = publish_archs(tmp_path, archs)
        records, profiles = socket_levels(tmp_path, specs, levels, args)
        inproc = inproc_costs(
            specs, tmp_path, args.out if args.profile else None, args.inproc_requests, args.inproc_repeats
        )
        for name, info in inproc.items():
            if "profile" in info:
                profiles[f"in process, one request at a time: {name}"] = info.pop("profile")
    add_overhead(records, sampler)
    add_inproc_overhead(inproc, sampler)
    meta = run_meta(args, loadavg_at_start) | {
        "warmup_s": args.warmup,
        "servers": variants,
        "archs": {k: ARCHS[k]._asdict() for k in archs},
    }
    result = {"meta": meta, "records": records, "inproc": inproc, "ratios": ratios(records, sampler)}
    result["sampler"] = sampler
    result["chunks"] = chunk_rows(records)
    write_report(args.out, result)
    print((args.out / "serve.md").read_text())
    write_profiles(args.out, "serve-profile-run", profiles, meta)
