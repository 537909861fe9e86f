"""What a toy run has finished, one trained model at a time, so a stopped run resumes at the next model.

A dataset of the large bench trains seven nets for about an hour of one core; without this, a run stopped
between sittings loses every net of the dataset it was on. Each finished model ("unit": the CFG pair, or
the EFM / ED net of one β) leaves `<dir>/<dataset>/<unit>.json` with its records, plus `<unit>.npz` with
the points it contributes to the figure (float16, as toy.samples.npz keeps them), and the CPU seconds it
took, so a resumed run still reports what its results cost. The files are small enough to commit, so a run
can move between machines.

Resuming is exact: every net is trained from its own seed and sampled from seeded noise, so a model's
records do not depend on which models ran before it in the same process. A unit written under other
settings is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

Record = dict[str, Any]


class Unit(NamedTuple):
    """One finished model's share of the run."""

    records: list[Record]
    figure: dict[str, np.ndarray]
    cpu_seconds: float | None  # None: written before units were timed


@dataclass
class Resumed:
    """What a run took over from checkpoints instead of training: its CPU belongs to an earlier sitting."""

    models: int = 0
    cpu_seconds: float = 0.0
    untimed_models: int = 0  # checkpoints that carry no time: their CPU is not counted anywhere

    def add(self, unit: Unit) -> None:
        self.models += 1
        if unit.cpu_seconds is None:
            self.untimed_models += 1
        else:
            self.cpu_seconds += unit.cpu_seconds

    def as_meta(self) -> dict[str, Any]:
        return {
            "resumed_models": self.models,
            "resumed_cpu_seconds": round(self.cpu_seconds, 1),
            "untimed_models": self.untimed_models,
        }


def settings_key(settings: dict[str, Any]) -> str:
    """A short digest of everything that decides a model's records (not which datasets a run covers)."""
    text = json.dumps({k: v for k, v in settings.items() if k != "datasets"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoints:
    """Per-model results of an unfinished run under `root` (None: keep nothing, resume nothing)."""

    def __init__(self, root: Path | None, settings: dict[str, Any]) -> None:
        self.root, self.key = root, settings_key(settings)

    def load(self, dataset: str, unit: str) -> Unit | None:
        """The unit's records, figure points and time, or None when it has to be (re)computed."""
        if self.root is None:
            return None
        path = self.root / dataset / f"{unit}.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if saved.get("settings") != self.key:
            return None
        figure: dict[str, np.ndarray] = {}
        if saved["figure"]:
            with np.load(path.with_suffix(".npz")) as points:
                figure = {col: points[col] for col in saved["figure"]}
        return Unit(saved["records"], figure, saved.get("cpu_seconds"))

    def save(self, dataset: str, unit: str, done: Unit) -> None:
        """Write the unit's figure points first and its records last: a unit counts as done only once its
        JSON exists, so a run stopped mid-write recomputes it."""
        if self.root is None:
            return
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        if done.figure:
            points: dict[str, Any] = {c: np.asarray(p, dtype=np.float16) for c, p in done.figure.items()}
            np.savez_compressed(folder / f"{unit}.npz", **points)
        tmp = folder / f"{unit}.json.tmp"
        saved = {
            "settings": self.key,
            "records": done.records,
            "figure": sorted(done.figure),
            "cpu_seconds": done.cpu_seconds,
        }
        tmp.write_text(json.dumps(saved))
        tmp.replace(folder / f"{unit}.json")

    def clear(self) -> None:
        """Drop everything once the run's own outputs are written."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
