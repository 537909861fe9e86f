"""The six 2-D toys of QGPO/CEP (Lu et al. 2023) with their energies, vectorised and seeded.

QGPO's generators return, with every point, a scalar it calls "energy" but uses as a *value*: its
guided target is p(x)·exp(β·value). Our contract is q ∝ p·exp(−βE) (docs/architecture.md), so E = −value;
the laws and values below follow QGPO's definitions. Where QGPO spaces points on a fixed `linspace`
(moons, rings), we draw the angle uniformly instead: the same law in the limit, but every sample is iid,
which the exact resampler and the distances need. The value of 8gaussians, moons, rings and 2spirals
depends on the latent component (mode, moon, ring, arc length), not only on x, so a generator returns
the pair; the tilted law is the x-marginal of the tilted joint either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


_ANGLES = np.pi / 2 + np.arange(8) * np.pi / 4
_RADIUS_4 = 4.0 * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)
EIGHT_GAUSSIAN_CENTERS = _RADIUS_4 / 1.414  # where the modes are; index = the mode's value × 7


def _eight_gaussians(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Modes on a circle of radius 4/1.414, std 0.5/1.414; value = mode index / 7 (counter-clockwise
    from the top)."""
    idx = rng.integers(0, 8, n)
    x = (_RADIUS_4[idx] + 0.5 * rng.standard_normal((n, 2))) / 1.414  # this order: the bench's exact bits
    return x, idx / 7.0


def _swissroll(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's make_swiss_roll(noise=1) projected on (x, z), / 5; value = ‖x‖² / 9."""
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.standard_normal((n, 2))
    x /= 5.0
    return x, (x**2).sum(axis=1) / 9.0


def _moons(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's make_moons(noise=0.1), ·2 + (−1, −0.2); value = 1 on the lower moon, 0 on the upper."""
    label = rng.integers(0, 2, n)
    theta = np.pi * rng.random(n)
    upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    lower = np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    x = np.where(label[:, None] == 1, lower, upper) + 0.1 * rng.standard_normal((n, 2))
    return x * 2 + np.array([-1.0, -0.2]), label.astype(np.float64)


_RING_RADII = np.array([3.0, 2.25, 1.5, 0.75])
_RING_VALUES = np.array([0.667, 0.333, 1.0, 0.0])  # QGPO's thresholds on r² map to one value per ring


def _rings(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four concentric rings (radii 3, 2.25, 1.5, 0.75), noise 0.08; value per ring 0.667/0.333/1/0."""
    ring = rng.integers(0, 4, n)
    theta = 2 * np.pi * rng.random(n)
    x = _RING_RADII[ring, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return x + 0.08 * rng.standard_normal((n, 2)), _RING_VALUES[ring]


def _checkerboard(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8 squares of side 2 on [−4, 4]²; value = 1 on the columns x ∈ (0, 2] and x ≤ −2."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    x = np.stack([x1, x2], axis=1) * 2
    px = x[:, 0]
    return x, (((px > 0) & (px <= 2)) | (px <= -2)).astype(np.float64)


def _two_spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals; value = clip(1 − arc parameter / 10, 0, 1): the centre is favoured."""
    half = n // 2
    s = np.sqrt(rng.random(n - half)) * 540 * (2 * np.pi) / 360
    arm = np.stack([-np.cos(s) * s, np.sin(s) * s], axis=1) + rng.random((n - half, 2)) * 0.5
    s2 = np.sqrt(rng.random(half)) * 540 * (2 * np.pi) / 360
    arm2 = -(np.stack([-np.cos(s2) * s2, np.sin(s2) * s2], axis=1) + rng.random((half, 2)) * 0.5)
    x = np.concatenate([arm, arm2]) / 3 + 0.1 * rng.standard_normal((n, 2))
    value = np.clip(1 - np.concatenate([s, s2]) / 10, 0, 1)
    perm = rng.permutation(n)
    return x[perm], value[perm]


@dataclass(frozen=True)
class ToyDataset:
    """A 2-D law p with an energy per sample; `sample` returns (x [n, 2] float64, E [n] float64)."""

    name: str
    generate: Sampler
    extent: float  # half-width of the square used in figures

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, value = self.generate(n, rng)
        return x.astype(np.float64), -value.astype(np.float64)


DATASETS: dict[str, ToyDataset] = {
    d.name: d
    for d in (
        ToyDataset("8gaussians", _eight_gaussians, 4.0),
        ToyDataset("swissroll", _swissroll, 3.5),
        ToyDataset("moons", _moons, 3.5),
        ToyDataset("rings", _rings, 3.5),
        ToyDataset("checkerboard", _checkerboard, 4.5),
        ToyDataset("2spirals", _two_spirals, 4.0),
    )
}


def get_dataset(name: str) -> ToyDataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown toy dataset {name!r}; choose from {', '.join(DATASETS)}") from None
