"""Run metrics: one JSON object per log record in `metrics.jsonl`, and a PNG of the learning curves
written beside it (one panel per phase), so a run directory explains itself without a notebook. When the
`tensorboard` package is installed the same scalars also go to `<run>/tensorboard/` (optional: nothing
here needs it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import IO, Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "learning_curves.png"
TENSORBOARD_DIR = "tensorboard"


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsWriter:
    """Appends records to `<run_dir>/metrics.jsonl` (truncated first unless resuming), flushed per line,
    and mirrors their numbers as TensorBoard scalars `<phase>/<key>` when `tensorboard` is True."""

    def __init__(self, run_dir: Path, resume: bool = False, tensorboard: bool = False) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_FILE
        self._fh: IO[str] = self.path.open("a" if resume else "w")
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))

    def __call__(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            self.scalars(str(record.get("phase", "train")), record, int(record.get("step", 0)))

    def scalars(self, group: str, values: dict[str, Any], step: int) -> None:
        """Numbers of `values` as TensorBoard scalars `<group>/<key>` (no-op without TensorBoard)."""
        if self._tb is None:
            return
        for key, value in values.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self._tb.add_scalar(f"{group}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()

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
        panels.append(
            (
                "critic vs held-out returns",
                [("q_mc_corr", "Q vs G, across states"), ("adv_mc_corr", "advantage, within states")],
            )
        )
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
                ax.plot(*zip(*pts, strict=True), label=label, marker="o" if len(pts) == 1 else None)
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
