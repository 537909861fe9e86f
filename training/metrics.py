"""Run metrics: one JSON object per log record in `metrics.jsonl`, and a PNG of the learning curves
written beside it (one panel per phase), so a run directory explains itself without a notebook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "learning_curves.png"


class MetricsWriter:
    """Appends records to `<run_dir>/metrics.jsonl` (truncated first unless resuming), flushed per line."""

    def __init__(self, run_dir: Path, resume: bool = False) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        self._fh: IO[str] = self.path.open("a" if resume else "w")

    def __call__(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_learning_curves(run_dir: Path, out: Path | None = None) -> Path | None:
    """metrics.jsonl → learning_curves.png (one panel per phase, log scale when all losses are > 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    phases = [p for p in ("behavior", "critic", "improve") if any(r.get("phase") == p for r in rows)]
    if not phases:
        return None
    # Diagnostics beside the losses: the critic against held-out returns, the sharpness of the weights.
    panels = [(p, [("loss", "loss")]) for p in phases]
    if any(r.get("q_mc_corr") is not None for r in rows):
        panels.append(("critic vs held-out returns", [("q_mc_corr", "correlation")]))
    if any("ess_fraction" in r for r in rows):
        panels.append(
            ("support-set weights", [("ess_fraction", "ESS/(M+1)"), ("data_weight", "dataset-action weight")])
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        phase_rows = [r for r in rows if r.get("phase") == title] if title in phases else rows
        for key, label in series:
            pts = [(r["step"], r[key]) for r in phase_rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        if title in phases:
            ax.set_ylabel("loss")
            ax.set_yscale("log" if all(r["loss"] > 0 for r in phase_rows) else "linear")
        elif len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    target = out or run_dir / CURVES_FILE
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
