"""`scripts/gpu-check.sh`: what a CUDA GPU changes, measured in one short run (a few minutes).

1. sampler: the fused K-step ONNX sampler (the artifact `/act` serves) on ONNX Runtime's CUDA provider with
   IO binding (`OnnxPolicy`, the server's own path) against ORT on the CPU (1 thread, all cores) and torch
   eager on CUDA; actions/s at batch 1 … 4096.
2. parity: the CUDA session's actions against the CPU session's for the same states and noise.
3. /act: real uvicorn servers on loopback with `QIPO_ORT_PROVIDER=cuda` (inline and thread executors)
   against `QIPO_ORT_PROVIDER=cpu` in the same run, closed-loop clients (1 … 256), one state per request.
4. train: `qipo train --device cuda` for a short schedule on a generated dataset; steps/s per phase, and
   what the library's default budget would take at those rates.

Writes gpu-check.json and gpu-check.md under --out. Wall-clock numbers (a GPU call's cost is not in the
calling thread's CPU time); every ratio is against a baseline of the same run.
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

import numpy as np

# The same servers, artifact and load generator as `make bench-serve`.
from loadtests.loadgen import load, scrape_batches, start_server, stop_server
from loadtests.sampler import ARCHS, build_artifact

BATCHES = (1, 16, 64, 256, 1024, 4096)
CLIENTS = (1, 16, 64, 256)
# (QIPO_ORT_PROVIDER, executor, QIPO_ORT_CUDA_GRAPH)
SERVERS = (
    ("cpu", "inline", False),
    ("cuda", "inline", False),
    ("cuda", "thread", False),
    ("cuda", "inline", True),
)
TRAIN_DEVICE = "cuda"
TRAIN_STEPS = {"behavior": 1000, "critic": 1000, "improve": 400}
DEFAULT_BUDGET = {"behavior": 10_000, "critic": 30_000, "improve": 4_000}  # QIPOConfig defaults


def wall_per_call(fn: Any, seconds: float = 1.0, least: int = 5) -> float:
    """Median wall seconds per call over about `seconds` (after 3 warm-ups)."""
    for _ in range(3):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < least:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def sampler_rows(policy: Any, artifact: Path) -> list[dict[str, Any]]:
    """Actions/s of each way of running the sampler, at each batch."""
    import torch

    from service.runtime import OnnxPolicy

    ways: dict[str, Any] = {
        "ort_cuda_graph": OnnxPolicy.load(artifact, provider="cuda", cuda_graph=True),
        "ort_cuda_iobinding": OnnxPolicy.load(artifact, provider="cuda"),
        "ort_cpu_1thread": OnnxPolicy.load(artifact, provider="cpu"),
        "ort_cpu_all_cores": OnnxPolicy.load(artifact, intra_threads=os.cpu_count() or 1, provider="cpu"),
    }
    assert ways["ort_cuda_iobinding"].io_binding, "the CUDA session did not take the IO-binding path"
    if ways["ort_cuda_graph"].graphs is None:
        print("CUDA graphs could not be captured (see the warning above)", flush=True)
        del ways["ort_cuda_graph"]
    gpu_policy = policy.to("cuda")
    obs_dim, noise_dim = ways["ort_cpu_1thread"].obs_dim, ways["ort_cpu_1thread"].noise_dim
    rows = []
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        state = rng.standard_normal((batch, obs_dim), dtype=np.float32)
        noise = rng.standard_normal((batch, noise_dim), dtype=np.float32)
        row: dict[str, Any] = {"batch": batch}
        for name, onnx in ways.items():
            if name == "ort_cpu_1thread" and batch > 1024:
                continue  # seconds per call; the all-cores row says what the CPU can do
            if name == "ort_cuda_graph" and batch > onnx.graphs.largest:
                continue  # beyond the largest bucket it is the plain CUDA call
            sec = wall_per_call(lambda o=onnx, s=state, n=noise: o.run(s, n))
            row[name] = {"ms": sec * 1e3, "actions_per_s": batch / sec}
        ts = torch.from_numpy(state).cuda()
        tn = torch.from_numpy(noise).cuda()

        def eager(ts: Any = ts, tn: Any = tn) -> None:
            with torch.inference_mode():
                gpu_policy(ts, tn).cpu()  # the copy back: what a server would have to do too

        sec = wall_per_call(eager)
        row["torch_cuda_eager"] = {"ms": sec * 1e3, "actions_per_s": batch / sec}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def parity(artifact: Path) -> dict[str, float]:
    from service.runtime import OnnxPolicy

    cuda = OnnxPolicy.load(artifact, provider="cuda")
    cpu = OnnxPolicy.load(artifact, provider="cpu")
    rng = np.random.default_rng(7)
    state = rng.standard_normal((4096, cpu.obs_dim), dtype=np.float32)
    noise = rng.standard_normal((4096, cpu.noise_dim), dtype=np.float32)
    reference = cpu.run(state, noise)
    diff = np.abs(cuda.run(state, noise) - reference)
    out = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "rows": 4096}
    graphs = OnnxPolicy.load(artifact, provider="cuda", cuda_graph=True)
    if graphs.graphs is not None:  # every bucket, padded rows included: 3, 16, 100 and 256 rows
        worst = max(
            float(np.abs(graphs.run(state[:n], noise[:n]) - reference[:n]).max())
            for n in (1, 3, 16, 100, 256)
        )
        out["graph_max_abs_diff"] = worst
    return out


def act_levels(
    tmp: Path, artifact: Path, servers: tuple[tuple[str, str, bool], ...] = SERVERS
) -> list[dict[str, Any]]:
    """Closed-loop /act load on real servers: CUDA (inline, thread) and the CPU baseline."""
    from service.registry import open_registry

    reg_path = tmp / "registry"
    reg = open_registry(str(reg_path), "qipo")
    version = reg.publish(artifact)
    reg.promote(version.name, "production", version.version)
    records = []
    for provider, executor, graph in servers:
        os.environ["QIPO_ORT_PROVIDER"] = provider
        os.environ["QIPO_ORT_CUDA_GRAPH"] = str(graph).lower()
        cache = tmp / f"cache-{provider}-{executor}-{graph}"
        proc, port = start_server("qipo", reg_path, cache, executor)
        try:
            for clients in CLIENTS:
                before = scrape_batches(port)
                result = asyncio.run(load(port, clients, warmup=1.0, duration=3.0))
                after = scrape_batches(port)
                calls = after[1] - before[1]
                record = {"provider": provider, "executor": executor, "cuda_graph": graph, "clients": clients}
                record |= result
                record["mean_batch"] = (after[0] - before[0]) / calls if calls else float("nan")
                records.append(record)
                print(json.dumps(record), flush=True)
        finally:
            stop_server(proc)
    os.environ.pop("QIPO_ORT_PROVIDER", None)
    os.environ.pop("QIPO_ORT_CUDA_GRAPH", None)
    return records


def train_check(tmp: Path, qipo: list[str], dataset: Path | None) -> dict[str, Any]:
    """A short `qipo train --device cuda`; steps/s per phase from its metrics.jsonl."""
    if dataset is None:  # generating needs minari; a machine without it is given --dataset
        subprocess.run([*qipo, "data", "make", "pendulum", "--out", str(tmp / "data")], check=True)
        dataset = tmp / "data" / "pendulum" / "mixed-v0"
    run = tmp / "run-cuda"
    cmd = [
        *qipo, "train", str(dataset), "--out", str(run), "--device", TRAIN_DEVICE,
        "--behavior-steps", str(TRAIN_STEPS["behavior"]), "--critic-steps", str(TRAIN_STEPS["critic"]),
        "--improve-steps", str(TRAIN_STEPS["improve"]), "--renew-every", "200", "--eval-episodes", "2",
        "--quiet",
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(done.stdout[-3000:], done.stderr[-3000:], flush=True)
    if done.returncode != 0:
        return {"ok": False, "returncode": done.returncode, "stderr_tail": done.stderr[-2000:]}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = phase_rates(rows)
    return {
        "ok": True,
        "wall_s": wall,
        "steps": TRAIN_STEPS,
        "steps_per_s": rates,
        "default_budget_s_at_these_rates": budget_seconds(rates),
    }


def phase_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Steps/s of each phase from a run's metrics.jsonl rows: the steps and elapsed seconds between the last
    row of the phase before and the phase's own last row."""
    rates: dict[str, float] = {}
    previous = (0, 0.0)
    for phase in ("behavior", "critic", "improve"):
        mine = [r for r in rows if r.get("phase") == phase and "elapsed_s" in r]
        if not mine:
            continue
        last = mine[-1]
        steps, seconds = last["step"] - previous[0], last["elapsed_s"] - previous[1]
        rates[phase] = steps / seconds if seconds > 0 else float("nan")
        previous = (last["step"], last["elapsed_s"])
    return rates


def budget_seconds(rates: dict[str, float]) -> float:
    """Seconds the library's default budget would take at these rates (phases without a rate left out)."""
    return sum(DEFAULT_BUDGET[p] / rates[p] for p in DEFAULT_BUDGET if p in rates)


def markdown(result: dict[str, Any]) -> str:
    env = result["env"]
    lines = [
        "# GPU check (`scripts/gpu-check.sh`)",
        "",
        f"{result['when']} · {env['gpu']} · onnxruntime {env['onnxruntime']} ({', '.join(env['providers'])})"
        f" · torch {env['torch']} · {env['cpus']} CPUs",
    ]
    ways = {
        "ort_cuda_graph": "ORT CUDA graphs",
        "ort_cuda_iobinding": "ORT CUDA + IO binding",
        "ort_cpu_1thread": "ORT CPU, 1 thread",
        "ort_cpu_all_cores": "ORT CPU, all cores",
        "torch_cuda_eager": "torch eager CUDA",
    }
    if "sampler" in result:
        shown = [k for k in ways if any(k in row for row in result["sampler"])]
        lines += [
            "",
            "## Sampler: actions/s of the exported K-step sampler (wall clock, median call)",
            "",
            "| batch | " + " | ".join(ways[k] for k in shown) + " | best CUDA ÷ best CPU |",
            "|---:|" + "---:|" * (len(shown) + 1),
        ]
        for row in result["sampler"]:
            cells = [f"{row[k]['actions_per_s']:,.0f}" if k in row else "–" for k in shown]
            cpu = max(row[k]["actions_per_s"] for k in ("ort_cpu_1thread", "ort_cpu_all_cores") if k in row)
            gpu = max(row[k]["actions_per_s"] for k in ("ort_cuda_graph", "ort_cuda_iobinding") if k in row)
            lines.append(f"| {row['batch']} | " + " | ".join(cells) + f" | {gpu / cpu:.2f}× |")
    par = result["parity"]
    lines += [
        "",
        f"Parity, CUDA against CPU session, {par['rows']} rows: max |Δaction| {par['max_abs_diff']:.2e}, "
        f"mean {par['mean_abs_diff']:.2e}"
        + (
            f"; CUDA graphs (1–256 rows, padded buckets) max {par['graph_max_abs_diff']:.2e}."
            if "graph_max_abs_diff" in par
            else "."
        ),
    ]
    if "act" in result:
        lines += [
            "",
            "## `/act` on real uvicorn servers (one state per request, closed loop, 3 s per level)",
            "",
            "| provider | executor | CUDA graphs | clients | req/s | p50 ms | p99 ms | mean batch | errors |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["act"]:
            graph = "yes" if r.get("cuda_graph") else "no"
            lines.append(
                f"| {r['provider']} | {r['executor']} | {graph} | {r['clients']} | {r['rps']:,.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_batch']:.1f} | {r['errors']} |"
            )
    if "train" in result:
        train = result["train"]
        lines += ["", "## `qipo train --device cuda` (short schedule, Pendulum `mixed`)", ""]
        if train.get("ok"):
            rates = ", ".join(f"{p} {v:.0f} steps/s" for p, v in train["steps_per_s"].items())
            lines.append(
                f"{train['steps']} in {train['wall_s']:.0f} s wall (start-up and 2 evaluation episodes "
                f"included): {rates}. The default budget (10k + 30k + 4k) would take about "
                f"{train['default_budget_s_at_these_rates'] / 60:.1f} min of training at these rates."
            )
        else:
            lines.append(f"Failed (exit {train.get('returncode')}): `{train.get('stderr_tail', '')[-300:]}`")
    return "\n".join(lines) + "\n"


def parse_servers(text: str) -> tuple[tuple[str, str, bool], ...]:
    out = []
    for item in filter(None, text.split(",")):
        provider, executor, graph = item.split(":")
        out.append((provider, executor, graph == "1"))
    return tuple(out)


def environment() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "gpu": gpu or torch.cuda.get_device_name(0),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--qipo", default="qipo", help="how to call the CLI")
    parser.add_argument("--dataset", type=Path, help="Pendulum `mixed` dataset (default: generate one)")
    parser.add_argument(
        "--servers",
        default=",".join(f"{p}:{e}:{int(g)}" for p, e, g in SERVERS),
        help="/act servers as provider:executor:cuda_graph(0|1), comma-separated",
    )
    parser.add_argument("--name", default="gpu-check", help="file stem of the results under --out")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: sampler,act,train")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "env": environment(),
    }
    print(json.dumps(result["env"]), flush=True)

    def save() -> None:
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        artifact = tmp / "artifact"
        policy = build_artifact(artifact, ARCHS["default"])
        result["parity"] = parity(artifact)
        print(json.dumps(result["parity"]), flush=True)
        save()
        if "train" not in skip:
            result["train"] = train_check(tmp, args.qipo.split(), args.dataset)
            save()
        if "sampler" not in skip:
            result["sampler"] = sampler_rows(policy, artifact)
            save()
        if "act" not in skip:
            result["act"] = act_levels(tmp, artifact, parse_servers(args.servers))
            save()
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
