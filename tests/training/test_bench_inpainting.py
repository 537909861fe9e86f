"""The inpainting measurement's arithmetic and record (training/bench/inpainting.py; no training here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.bench import inpainting

ROOT = Path(__file__).resolve().parents[2]


def test_arm_summary_means_and_gaps() -> None:
    jerks = [{"boundary": 2.0, "inside": 1.0}, {"boundary": 4.0, "inside": float("nan")}]
    row = inpainting.arm_summary([-100.0, -300.0], jerks, [0.0, 0.5], [0.25, 0.75])
    assert row["return_mean"] == -200.0 and row["return_std"] == 100.0
    assert (row["jerk_boundary"], row["jerk_inside"], row["jerk_ratio"]) == (3.0, 1.0, 3.0)  # nan skipped
    assert row["committed_max_abs"] == 0.5 and row["overlap_mean_abs"] == 0.5
    empty = inpainting.arm_summary([0.0], [{"boundary": 1.0, "inside": 1.0}], [], [])
    assert empty["committed_max_abs"] == 0.0 and empty["overlap_mean_abs"] is None


def test_clock_and_noise_are_the_same_in_every_arm() -> None:
    clock = inpainting.StepClock()
    clock.t += inpainting.PERIOD
    assert clock() == pytest.approx(0.05)
    assert inpainting.episode_noise(3, 7) == inpainting.episode_noise(3, 7)
    assert inpainting.episode_noise(3, 7) != inpainting.episode_noise(3, 8)


def test_the_committed_record_has_every_arm_and_todays_config() -> None:
    committed = json.loads((ROOT / "docs" / "bench" / "inpainting_pendulum.json").read_text())
    assert inpainting.report(committed["rows"]) == committed
    arms = [(r["delay"], r["execute_steps"], r["inpainting"]) for r in committed["rows"]]
    assert arms == [(d, s, m) for d, s in inpainting.ARMS for m in inpainting.INPAINTINGS]
    assert not any(math.isnan(r["return_mean"]) for r in committed["rows"])
    assert inpainting.parse_args([]).out == Path("docs/bench")
