"""Probability paths: how to noise data for training and which ODE drift to integrate for sampling.

A path maps a model output to the ODE drift, so one Euler sampler (and one ONNX export) serves every
variant. The conditional OT path runs noise (t = 0) → data (t = 1).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class ProbabilityPath(Protocol):
    name: str

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Noise x0, data x1, times t [B] → (x_t, regression target for the network)."""
        ...

    def drift(self, model_out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """dx/dt of the sampling ODE at (x, t), given the network's output there."""
        ...

    def time_grid(self, steps: int) -> list[float]:
        """steps + 1 times from the noise end to the data end."""
        ...


class OTPath:
    """x_t = (1 − t)·x0 + t·x1, u_t = x1 − x0; the network predicts the velocity directly."""

    name = "ot"

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(n, generator=generator)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        tt = t.unsqueeze(-1)
        return (1 - tt) * x0 + tt * x1, x1 - x0

    def drift(self, model_out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        return model_out

    def time_grid(self, steps: int) -> list[float]:
        return [k / steps for k in range(steps + 1)]


def make_path(variant: str) -> ProbabilityPath:
    if variant in ("qipo-ot", "ot", "bc"):
        return OTPath()
    if variant in ("qipo-diff", "vp"):
        from training.vp_path import VPPath  # type: ignore[import-not-found,unused-ignore]

        path: ProbabilityPath = VPPath()
        return path
    raise ValueError(f"unknown variant {variant!r}; choose qipo-ot or qipo-diff")
