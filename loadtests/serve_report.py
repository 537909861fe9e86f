"""The serving benchmark's report: overhead per request (server CPU − the floor's − the sampler's), ratios
against the floor of the same run, the goals, and serve.{json,md,png} / serve-inproc.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtests.sampler import ARCHS, sampler_us_per_row

NOTES = """## How to read this

- Every number comes from one run: the floor and each server are loaded in turn at each client count, so
  drift of the box hits all of them alike. On a box shared with other jobs, wall-clock req/s and latency
  move by ±50% between runs; **server CPU µs/req** (user + system time of the server process, threads
  included, over the measured window ÷ requests answered) does not depend on how much CPU the server was
  given, so it is the column to compare across runs and boxes.
- `mean batch` is rows per ONNX call from the server's own `qipo_batch_size` histogram. The batcher
  flushes at the end of the event-loop tick (no fixed wait), so batches grow with load by themselves.
- **overhead µs/req** = server CPU µs/req − the floor's CPU µs/req at the same client count − the
  sampler's µs per row at the measured mean batch (ONNX alone, interpolated between the batches of the
  sampler table's run): what the serving code costs beyond FastAPI + uvicorn and the model.
- Goals: overhead ≤ 60 µs/req at 1 client and ≤ 15 µs/req at 64; at 1 client p50 ≤
  floor p50 + 1.2× the sampler's batch-1 time; at 64 clients req/s ≥ 0.7× the floor's for `default`
  and ≥ 0.85× for `small`, p99 ≤ 1.5× the floor's; ONNX ≥ 3× torch eager at batch 1.
- `baseline` rows (only with `--baseline DIR`) serve the same model with another source tree's `service`
  package, measured in the same run.
- `default` is the network `qipo train` exports by default; `small` (64 wide) is ~4× cheaper per row
  and isolates the serving overhead from the model's compute."""
GOAL_WORD = {True: "met", False: "NOT met", None: "not measured"}
# req/s at 64 clients ÷ the floor's, per architecture; overhead µs/req at 1 and 64 clients.
RPS_64_GOAL = {"default": 0.7, "small": 0.85, "chunk8": 0.7}  # chunk8: default's network
OVERHEAD_GOAL_US = {1: 60.0, 64: 15.0}


def variant_of(r: dict[str, Any]) -> str:
    """`arch:executor`, prefixed with `baseline ` for the server run from --baseline's sources."""
    name = f"{r['model']}:{r['executor']}"
    return f"baseline {name}" if r["server"] == "baseline" else name


def add_overhead(records: list[dict[str, Any]], sampler: dict[str, list[dict[str, Any]]]) -> None:
    """overhead µs/req = server CPU µs/req − the floor's (same clients) − the sampler's µs per row at the
    measured mean batch: what the serving code costs beyond FastAPI + uvicorn and the model."""
    floor = {r["clients"]: r for r in records if r["server"] == "floor"}
    for r in records:
        if r["server"] == "floor" or r["mean_batch"] is None:
            continue
        per_row = sampler_us_per_row(sampler[r["model"]], r["mean_batch"])
        r["sampler_us_per_row"] = per_row
        r["overhead_us_per_req"] = (
            r["server_cpu_us_per_req"] - floor[r["clients"]]["server_cpu_us_per_req"] - per_row
        )


def add_inproc_overhead(inproc: dict[str, Any], sampler: dict[str, list[dict[str, Any]]]) -> None:
    """In-process overhead: the app's CPU µs/req − the floor app's − the sampler's µs per row (batch 1 for
    one request at a time; batch 64 for 64 at once, which one loop tick joins into one call), the sampler
    as timed in the app's own process right after it ran when the child measured it (the same moment of a
    shared box), else the sampler table's. `python_…` subtracts the ONNX call as it ran inside the app
    instead (caches are colder there than in a loop of sampler calls), which leaves the Python the serving
    code adds."""
    floor = inproc["floor"]["us_per_req"]
    for info in inproc.values():
        if info["model"] is None:
            continue
        own = info.get("sampler_us_per_row", {})
        info["overhead_us_per_req"] = {
            c: us - floor[c] - own.get(c, sampler_us_per_row(sampler[info["model"]], float(c)))
            for c, us in info["us_per_req"].items()
        }
        info["python_overhead_us_per_req"] = {
            c: us - floor[c] - info["onnx_us_per_req"][c] for c, us in info["us_per_req"].items()
        }


def ratios(records: list[dict[str, Any]], sampler: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per server (arch:executor): req/s, p99, overhead against the floor at the same client count."""
    floor = {r["clients"]: r for r in records if r["server"] == "floor"}
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(variant_of(r) for r in records if r["server"] != "floor"):
        rows = [r for r in records if r["server"] != "floor" and variant_of(r) == variant]
        arch = rows[0]["model"]
        compute_1 = next(r["onnx_ms"] for r in sampler[arch] if r["batch"] == 1)
        speed_1 = next(r["speedup"] for r in sampler[arch] if r["batch"] == 1)
        per: dict[str, Any] = {}
        for r in rows:
            f = floor[r["clients"]]
            per[str(r["clients"])] = {
                "rps_ratio": r["rps"] / f["rps"],
                "cpu_per_req_ratio": r["server_cpu_us_per_req"] / f["server_cpu_us_per_req"],
                "p99_ratio": r["p99_ms"] / f["p99_ms"],
                "p50_over_floor_ms": r["p50_ms"] - f["p50_ms"],
                "overhead_us_per_req": r.get("overhead_us_per_req"),
            }
        out[variant] = {
            "by_clients": per,
            "sampler_ms_batch1": compute_1,
            "goals": goals(arch, per.get("1"), per.get("64"), compute_1, speed_1),
        }
    return out


def goals(
    arch: str, one: dict[str, Any] | None, many: dict[str, Any] | None, compute_1: float, speed_1: float
) -> dict[str, bool | None]:
    """Each goal met (True), missed (False) or not measured (None), from the 1- and 64-client ratios."""
    rps_goal = RPS_64_GOAL.get(arch, 0.75)

    def overhead_ok(level: dict[str, Any] | None, clients: int) -> bool | None:
        if level is None or level["overhead_us_per_req"] is None:
            return None
        return bool(level["overhead_us_per_req"] <= OVERHEAD_GOAL_US[clients])

    return {
        f"overhead_1_le_{OVERHEAD_GOAL_US[1]:g}us": overhead_ok(one, 1),
        f"overhead_64_le_{OVERHEAD_GOAL_US[64]:g}us": overhead_ok(many, 64),
        "p50_1_le_floor_plus_1.2x_sampler": None
        if one is None
        else one["p50_over_floor_ms"] <= 1.2 * compute_1,
        f"rps_64_ge_{rps_goal:g}x_floor": None if many is None else many["rps_ratio"] >= rps_goal,
        "p99_64_le_1.5x_floor": None if many is None else many["p99_ratio"] <= 1.5,
        "onnx_ge_3x_torch_batch1": speed_1 >= 3.0,
    }


def inproc_lines(result: dict[str, Any]) -> list[str]:
    """The in-process table (markdown lines) of serve.md and serve-inproc.md."""
    n = result["meta"]["inproc_requests"]
    repeats = result["meta"].get("inproc_repeats", 1)
    lines = [
        "",
        "## In process: the ASGI app called directly (thread CPU µs per request)",
        "",
        "No sockets, no uvicorn, no scheduler: each app (floor included) is called on uvloop with the same "
        f"bodies, {n} requests one at a time, then {n} as 64 at once"
        + (f"; median of {repeats} runs, the apps in turn" if repeats > 1 else "")
        + "; overhead = app − floor app − sampler µs/row (batch 1, batch 64). This is what the serving code "
        "itself costs; other jobs on the box move it far less than wall time, though not to nothing (they "
        "share the cores' caches).",
        "",
        "`ONNX in app` is the thread CPU of the ONNX calls inside the app; `sampler` the median thread CPU "
        "of the same session called in a loop in the same process right after (µs per row); `Python` = app "
        "− floor app − ONNX in app: the serving code's own cost.",
        "",
        "| app | model | clients | µs/req | ONNX in app µs/req | sampler µs/row | overhead µs/req "
        "| Python µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, info in result["inproc"].items():
        for c, us in info["us_per_req"].items():
            onnx = info["onnx_us_per_req"].get(c) if info["model"] else None
            own = info.get("sampler_us_per_row", {}).get(c)
            over = info.get("overhead_us_per_req", {}).get(c)
            py = info.get("python_overhead_us_per_req", {}).get(c)
            cells = ["" if v is None else f"{v:.0f}" for v in (onnx, own, over, py)]
            lines.append(f"| {name} | {info['model'] or ''} | {c} | {us:.0f} | " + " | ".join(cells) + " |")
    return lines


def write_report(out_dir: Path, result: dict[str, Any]) -> None:
    """serve.json, serve.md and (with matplotlib) serve.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "serve.md").write_text(serve_markdown(result))
    plot(result, out_dir / "serve.png")


def plot(result: dict[str, Any], path: Path) -> None:
    """req/s and p99 against client count, per server (nothing without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        series: dict[str, list[dict[str, Any]]] = {}
        for r in result["records"]:
            label = "floor" if r["server"] == "floor" else f"qipo {variant_of(r)}"
            series.setdefault(label, []).append(r)
        for label, rows in series.items():
            xs = [r["clients"] for r in rows]
            axes[0].plot(xs, [r["rps"] for r in rows], marker="o", label=label)
            axes[1].plot(xs, [r["p99_ms"] for r in rows], marker="o", label=label)
        for ax, title in zip(axes, ("req/s", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    except ImportError:
        pass


def serve_markdown(result: dict[str, Any]) -> str:
    """serve.md: the socket table, the in-process table, the ratios and goals, the sampler table."""
    meta = result["meta"]
    lines = [
        "# Serving benchmark (`make bench-serve`)",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['duration_s']} s per level after {meta['warmup_s']} s "
        f"warm-up · load average (1 min) {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end · "
        "load generator: raw-socket asyncio, keep-alive, closed loop, same box.",
        "",
        "Floor = FastAPI + uvicorn app with the same route, orjson parse and reply shape but no model.",
        "Architectures: "
        + ", ".join(
            f"`{k}` = {a.hidden} wide × {a.blocks} blocks, {a.steps} Euler steps"
            + (f", chunks of H = {a.horizon} actions per reply" if a.horizon > 1 else "")
            for k, a in ARCHS.items()
        )
        + ".",
        "",
        "| server | model | executor | clients | req/s | actions/s | p50 ms | p99 ms | mean batch "
        "| server CPU µs/req | sampler µs/row | overhead µs/req |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["records"]:
        mb = "" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
        per_row = "" if r.get("sampler_us_per_row") is None else f"{r['sampler_us_per_row']:.0f}"
        overhead = "" if r.get("overhead_us_per_req") is None else f"{r['overhead_us_per_req']:.0f}"
        lines.append(
            f"| {r['server']} | {r['model'] or ''} | {r['executor'] or ''} | {r['clients']} | "
            f"{r['rps']:.0f} | {r.get('actions_per_s', r['rps']):.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {mb} | "
            f"{r['server_cpu_us_per_req']:.0f} | {per_row} | {overhead} |"
        )
    lines += chunk_lines(result["records"])
    lines += inproc_lines(result)
    lines += ratio_lines(result) + sampler_lines(result)
    lines += ["", NOTES, ""]
    return "\n".join(lines)


def chunk_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each chunked server's actions delivered per second against one-action `default` on the same
    executor and client count (same network width and solver: what answering H actions per request buys)."""
    single = {
        (r["executor"], r["clients"]): r for r in records if r["server"] == "qipo" and r["model"] == "default"
    }
    out = []
    for r in records:
        base = single.get((r["executor"], r["clients"]))
        if r["server"] != "qipo" or r.get("action_horizon", 1) == 1 or base is None:
            continue
        out.append(
            {
                "model": r["model"],
                "executor": r["executor"],
                "clients": r["clients"],
                "action_horizon": r["action_horizon"],
                "actions_per_s": r["actions_per_s"],
                "single_actions_per_s": base["actions_per_s"],
                "actions_ratio": r["actions_per_s"] / base["actions_per_s"],
                "p99_ms": r["p99_ms"],
                "single_p99_ms": base["p99_ms"],
            }
        )
    return out


def chunk_lines(records: list[dict[str, Any]]) -> list[str]:
    rows = chunk_rows(records)
    if not rows:
        return []
    lines = [
        "",
        "## Action chunks: actions delivered per second",
        "",
        "A chunked model answers H actions per request; a robot executing them open-loop at its control rate "
        "needs one request per H steps. Against `default` (one action per reply, same network and solver, "
        "same executor and client count, same run):",
        "",
        "| model | executor | clients | H | actions/s | `default` actions/s | ratio | p99 ms "
        "| `default` p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        lines.append(
            f"| {c['model']} | {c['executor']} | {c['clients']} | {c['action_horizon']} | "
            f"{c['actions_per_s']:.0f} | {c['single_actions_per_s']:.0f} | {c['actions_ratio']:.1f}× | "
            f"{c['p99_ms']:.2f} | {c['single_p99_ms']:.2f} |"
        )
    return lines


def ratio_lines(result: dict[str, Any]) -> list[str]:
    """Per server: req/s, p99, p50, CPU and overhead against the floor at each client count; the goals."""
    lines = ["", "## Against the floor of the same run", ""]
    for arch, info in result["ratios"].items():
        lines.append(f"**qipo {arch}** (its sampler at batch 1: {info['sampler_ms_batch1']:.3f} ms)")
        lines.append("")
        lines.append(
            "| clients | req/s ÷ floor | p99 ÷ floor | p50 − floor p50 (ms) | server CPU/req ÷ floor "
            "| overhead µs/req |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for c, v in info["by_clients"].items():
            overhead = "" if v["overhead_us_per_req"] is None else f"{v['overhead_us_per_req']:.0f}"
            lines.append(
                f"| {c} | {v['rps_ratio']:.2f} | {v['p99_ratio']:.2f} | {v['p50_over_floor_ms']:.2f} | "
                f"{v['cpu_per_req_ratio']:.2f} | {overhead} |"
            )
        lines.append("")
        lines.append("Goals: " + ", ".join(f"{k}: {GOAL_WORD[v]}" for k, v in info["goals"].items()))
        lines.append("")
    return lines


def sampler_lines(result: dict[str, Any]) -> list[str]:
    lines = ["## Fused ONNX sampler vs torch eager (1 thread each, median CPU time per call)", ""]
    lines += ["| model | batch | ONNX ms | torch eager ms | speed-up |", "|---|---:|---:|---:|---:|"]
    for arch, rows in result["sampler"].items():
        for s in rows:
            if "torch_eager_ms" not in s:
                continue
            lines.append(
                f"| {arch} | {s['batch']} | {s['onnx_ms']:.3f} | {s['torch_eager_ms']:.3f} | "
                f"{s['speedup']:.1f}× |"
            )
    return lines


def inproc_markdown(result: dict[str, Any]) -> str:
    """serve-inproc.md (`--inproc-only`): the in-process table and the sampler's batch-1 time."""
    meta, sampler = result["meta"], result["sampler"]
    lines = [
        "# In-process cost of `/act` (`scripts/bench_serve.py --inproc-only`)",
        "",
        f"{meta['when']} · {meta['machine']} · load average {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end. Sampler (ONNX alone, median thread CPU per call): "
        + ", ".join(f"`{a}` {r[0]['onnx_ms'] * 1e3:.0f} µs at batch 1" for a, r in sampler.items())
        + ". No socket numbers here: those come from the full `make bench-serve` (serve.md).",
        *inproc_lines(result),
    ]
    return "\n".join(lines) + "\n"
