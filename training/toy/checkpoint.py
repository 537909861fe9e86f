"""What a toy run has finished, one trained model at a time, so a stopped run resumes at the next model.

A dataset of the large bench trains seven nets for about an hour of one core; without this, a run stopped
between sittings loses every net of the dataset it was on. Each finished model ("unit": the CFG pair, or
the EFM / ED net of one β) leaves `<dir>/<dataset>/<unit>.json` with its records, plus `<unit>.npz` with
the points it contributes to the figure (float16, as toy.samples.npz keeps them). The files are small
enough to commit, so a run can move between machines.

Resuming is exact: every net is trained from its own seed and sampled from seeded noise, so a model's
records do not depend on which models ran before it in the same process. A unit written under other
settings is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

Record = dict[str, Any]


def settings_key(settings: dict[str, Any]) -> str:
    """A short digest of everything that decides a model's records (not which datasets a run covers)."""
    text = json.dumps({k: v for k, v in settings.items() if k != "datasets"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoints:
    """Per-model results of an unfinished run under `root` (None: keep nothing, resume nothing)."""

    def __init__(self, root: Path | None, settings: dict[str, Any]) -> None:
        self.root, self.key = root, settings_key(settings)

    def load(self, dataset: str, unit: str) -> tuple[list[Record], dict[str, np.ndarray]] | None:
        """The unit's records and figure points, or None when it has to be (re)computed."""
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
        return saved["records"], figure

    def save(self, dataset: str, unit: str, records: list[Record], figure: dict[str, np.ndarray]) -> None:
        """Write the unit's figure points first and its records last: a unit counts as done only once its
        JSON exists, so a run stopped mid-write recomputes it."""
        if self.root is None:
            return
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        if figure:
            points: dict[str, Any] = {c: np.asarray(p, dtype=np.float16) for c, p in figure.items()}
            np.savez_compressed(folder / f"{unit}.npz", **points)
        tmp = folder / f"{unit}.json.tmp"
        tmp.write_text(json.dumps({"settings": self.key, "records": records, "figure": sorted(figure)}))
        tmp.replace(folder / f"{unit}.json")

    def clear(self) -> None:
        """Drop everything once the run's own outputs are written."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
