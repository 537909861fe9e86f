"""The toy probe's arguments and mode masses (training/toy/probe.py; no training here)."""

from __future__ import annotations

import numpy as np

from training.toy import probe
from training.toy.datasets import EIGHT_GAUSSIAN_CENTERS


def test_mode_masses_count_the_nearest_centre() -> None:
    x = np.concatenate([EIGHT_GAUSSIAN_CENTERS[[0, 0, 0, 5]], EIGHT_GAUSSIAN_CENTERS[[5]] * 1.1])
    masses = probe.mode_masses(x)
    assert masses[0] == 0.6 and masses[5] == 0.4 and sum(masses) == 1.0
    weighted = probe.mode_masses(x, np.array([1.0, 1.0, 1.0, 3.0, 3.0]))
    assert weighted[0] == round(3 / 9, 4) and weighted[5] == round(6 / 9, 4)


def test_arguments_and_training_overrides() -> None:
    args = probe.parse_args(["--label", "x"])
    assert (args.dataset, args.beta, args.size, args.steps, args.sample_steps) == (
        "2spirals",
        10.0,
        "large",
        4000,
        "100",
    )
    assert probe.train_overrides(args) == {"steps": 4000}
    args = probe.parse_args(["--label", "x", "--steps", "8000", "--lr", "0.001", "--batch-size", "512"])
    assert probe.train_overrides(args) == {"steps": 8000, "batch_size": 512, "lr": 0.001}
