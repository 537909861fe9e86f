"""Render the Grafana dashboard (deploy/grafana/dashboards/qipo.json) to a PNG from a real Prometheus.

Grafana is not packaged for Debian, so this draws every panel with matplotlib from the same PromQL the
dashboard runs, against the Prometheus of `make stack`, at the dashboard's grid positions. It is a faithful
view of the data and the queries, not a Grafana screenshot.

    python loadtests/dashboard.py --prometheus http://127.0.0.1:9090 --last 120 --out docs/bench/dashboard.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"s": ("ms", 1e3), "reqps": ("req/s", 1.0), "ops": ("1/s", 1.0), "none": ("", 1.0)}
ROW_PX = 30  # one Grafana grid row


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    args = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{args}", timeout=10) as reply:
        body = json.loads(reply.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
    return list(body["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or str(labels)


def draw_timeseries(ax: Axes, series: list[tuple[str, list[float], list[float]]], unit: str) -> None:
    label, scale = UNITS.get(unit, (unit, 1.0))
    for name, ts, vs in series:
        ax.plot(ts, [v * scale for v in vs], lw=1.2, label=name)
    ax.set_ylabel(label, fontsize=7)
    if series:
        ax.legend(fontsize=6, loc="upper left", ncol=3, frameon=False)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.6")


def draw_state_timeline(ax: Axes, series: list[tuple[dict[str, str], list[float], list[float]]]) -> None:
    """One row per (instance, version) series, filled where it is 1, as Grafana's state timeline draws it.

    A replaced version stays at 1 while it drains (pinned robots may still use it), so rows overlap in time.
    """
    versions = sorted({labels.get("version", "?") for labels, _, _ in series}, key=lambda v: (len(v), v))
    colours = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(versions)}
    rows = sorted(
        series, key=lambda s: (s[0].get("instance", ""), len(s[0].get("version", "")), s[0].get("version"))
    )
    for row, (labels, ts, vs) in enumerate(rows):
        on = [t for t, v in zip(ts, vs, strict=True) if v == 1]
        step = min((b - a for a, b in itertools.pairwise(ts)), default=1.0)
        ax.broken_barh([(t, step) for t in on], (row - 0.35, 0.7), color=colours[labels.get("version", "?")])
    names = [f"{labels.get('instance', '?')} v{labels.get('version', '?')}" for labels, _, _ in rows]
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.set_ylim(-0.6, len(rows) - 0.4)


def render(
    prom: str, dashboard: Path, start: float, end: float, out: Path, rate: str, events: list[Any]
) -> None:
    dash = json.loads(dashboard.read_text())
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(16, rows * ROW_PX / 72 * 0.9), facecolor="#111217")
    step = max(1.0, (end - start) / 300)
    for panel in panels:
        g = panel["gridPos"]
        top, pad = 0.955, 0.012  # room for the title; Grafana's grid is 24 columns wide
        rect = (
            g["x"] / 24 + 3 * pad,
            top - (g["y"] + g["h"]) / rows * top + 2.4 * pad,
            g["w"] / 24 - 4 * pad,
            g["h"] / rows * top - 4.2 * pad,
        )
        if panel["type"] == "state-timeline":  # room for the row names
            rect = (rect[0] + 0.045, rect[1], rect[2] - 0.045, rect[3])
        ax = fig.add_axes(rect, facecolor="#181b1f")
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.15)
        if panel["type"] == "state-timeline":
            raw = []
            for target in panel["targets"]:
                for s in query_range(
                    prom, target["expr"].replace("$__rate_interval", rate), start, end, step
                ):
                    ts = [float(t) - start for t, _ in s["values"]]
                    raw.append((s["metric"], ts, [float(v) for _, v in s["values"]]))
            draw_state_timeline(ax, raw)
        else:
            series = []
            for target in panel["targets"]:
                for s in query_range(
                    prom, target["expr"].replace("$__rate_interval", rate), start, end, step
                ):
                    pts = [(float(t) - start, float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf")]
                    if pts:
                        name = legend(target["legendFormat"], s["metric"])
                        series.append((name, [t for t, _ in pts], [v for _, v in pts]))
            draw_timeseries(ax, series, panel["fieldConfig"]["defaults"].get("unit", "none"))
            ax.set_ylim(bottom=0)
        for event in events:
            ax.axvline(event["t"], color="#ff9830", lw=0.8, ls="--")
        ax.set_xlim(0, end - start)
        ax.set_xlabel("seconds into the run", fontsize=6)
    marks = ", ".join(
        f"{e['event']} v{e['from_version']}→v{e['to_version']} at {e['t']:.0f} s" for e in events
    )
    fig.suptitle(
        f"{dash['title']} — every panel of {dashboard.name}, drawn with matplotlib from a real Prometheus "
        f"(local stack run){'; dashed: ' + marks if marks else ''}",
        fontsize=10,
        y=0.995,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=ROOT / "deploy/grafana/dashboards/qipo.json")
    parser.add_argument("--last", type=float, default=120.0, help="Seconds before now to draw")
    parser.add_argument("--start", type=float, help="Unix time of the left edge (default: now - last)")
    parser.add_argument("--end", type=float, help="Unix time of the right edge (default: now)")
    parser.add_argument("--rate-interval", default="5s", help="What $__rate_interval becomes")
    parser.add_argument("--summary", type=Path, help="Locust summary JSON: marks its upgrade events")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/bench/dashboard.png")
    args = parser.parse_args()
    end = args.end or time.time()
    start = args.start or end - args.last
    events: list[Any] = []
    if args.summary:
        summary = json.loads(args.summary.read_text())
        offset = summary.get("started_at", start) - start
        events = [e | {"t": e["t"] + offset} for e in summary["upgrade_log"] if "to_version" in e]
    render(args.prometheus, args.dashboard, start, end, args.out, args.rate_interval, events)


if __name__ == "__main__":
    main()
