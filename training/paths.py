"""Probability paths: how to noise data for training and how to take one sampler step.

A path owns both the regression target and the solver step, so one sampling loop (and one ONNX export)
serves every variant. Times are Python floats, so an exported sampler has them as constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, float], Tensor]  # (x, t) -> network output at time t


SOLVERS: dict[str, tuple[str, ...]] = {"ot": ("euler", "midpoint"), "vp": ("dpm-solver-2", "ddim")}
# Default steps per solver: 10 Euler steps for the OT path (docs/architecture.md); DPM-Solver-2 makes 2 net
# calls per step, so 8 steps (16 calls) is close to QGPO's 15-call sampler.
DEFAULT_STEPS: dict[str, int] = {"euler": 10, "midpoint": 5, "dpm-solver-2": 8, "ddim": 15}


class ProbabilityPath(Protocol):
    name: str
    solver: str

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Noise x0, data x1, times t [B] → (x_t, regression target for the network)."""
        ...

    def step(self, fn: ModelFn, x: Tensor, t: float, t_next: float) -> Tensor:
        """One solver step from t to t_next (may evaluate the network more than once)."""
        ...

    def time_grid(self, steps: int) -> list[float]:
        """steps + 1 times from the noise end to the data end."""
        ...


class OTPath:
    """Conditional OT path, noise (t = 0) → data (t = 1): x_t = (1 − t)·x0 + t·x1, u_t = x1 − x0.
    The network predicts the velocity; the solver is Euler (one call per step) or midpoint (two)."""

    name = "ot"

    def __init__(self, solver: str = "euler") -> None:
        _check_solver(self.name, solver)
        self.solver = solver

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(n, generator=generator)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        tt = t.unsqueeze(-1)
        return (1 - tt) * x0 + tt * x1, x1 - x0

    def step(self, fn: ModelFn, x: Tensor, t: float, t_next: float) -> Tensor:
        h = t_next - t
        if self.solver == "midpoint":
            return x + h * fn(x + 0.5 * h * fn(x, t), t + 0.5 * h)
        return x + h * fn(x, t)

    def time_grid(self, steps: int) -> list[float]:
        return [k / steps for k in range(steps + 1)]


class VPPath:
    """QGPO's VP diffusion, data (t ≈ 0) ← noise (t = 1): x_t = α_t·x1 + σ_t·ε with
    log α_t = −¼t²(β1 − β0) − ½tβ0, σ_t = √(1 − α_t²); the network predicts ε.

    Sampling integrates the probability-flow ODE with DPM-Solver-2 (midpoint in λ = log α/σ, two network
    calls per step), which is exact for the linear part, or DPM-Solver-1 (= DDIM, one call per step).
    """

    name = "vp"

    def __init__(
        self, solver: str = "dpm-solver-2", beta0: float = 0.1, beta1: float = 20.0, t_min: float = 1e-3
    ) -> None:
        _check_solver(self.name, solver)
        self.solver = solver
        self.beta0, self.beta1, self.t_min = beta0, beta1, t_min

    def log_alpha(self, t: float) -> float:
        return -0.25 * t * t * (self.beta1 - self.beta0) - 0.5 * t * self.beta0

    def _log_alpha_tensor(self, t: Tensor) -> Tensor:
        return -0.25 * t * t * (self.beta1 - self.beta0) - 0.5 * t * self.beta0

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self._log_alpha_tensor(t).exp()
        return alpha, (1 - alpha * alpha).clamp_min(1e-12).sqrt()

    def lam(self, t: float) -> float:
        la = self.log_alpha(t)
        return la - 0.5 * math.log(max(1 - math.exp(2 * la), 1e-12))

    def t_of_lambda(self, lam: float) -> float:
        """Inverse of λ(t): solve ¼(β1−β0)t² + ½β0t + log α = 0 for the target log α."""
        log_alpha = -0.5 * math.log1p(math.exp(-2 * lam))
        a, b = 0.25 * (self.beta1 - self.beta0), 0.5 * self.beta0
        return (-b + math.sqrt(b * b - 4 * a * log_alpha)) / (2 * a)

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.t_min + (1 - self.t_min) * torch.rand(n, generator=generator)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.alpha_sigma(t.unsqueeze(-1))
        return alpha * x1 + sigma * x0, x0

    def _first_order(self, eps: Tensor, x: Tensor, s: float, t: float) -> Tensor:
        """DPM-Solver-1 (DDIM) from time s to time t given ε at s."""
        h = self.lam(t) - self.lam(s)
        a_s, a_t = math.exp(self.log_alpha(s)), math.exp(self.log_alpha(t))
        sigma_t = math.sqrt(max(1 - a_t * a_t, 0.0))
        return (a_t / a_s) * x - sigma_t * math.expm1(h) * eps

    def step(self, fn: ModelFn, x: Tensor, t: float, t_next: float) -> Tensor:
        if self.solver == "ddim":
            return self._first_order(fn(x, t), x, t, t_next)
        mid = self.t_of_lambda(0.5 * (self.lam(t) + self.lam(t_next)))
        x_mid = self._first_order(fn(x, t), x, t, mid)
        return self._first_order(fn(x_mid, mid), x, t, t_next)

    def time_grid(self, steps: int) -> list[float]:
        """Uniform in λ between t = 1 and t_min (DPM-Solver's recommended spacing)."""
        lam_hi, lam_lo = self.lam(self.t_min), self.lam(1.0)
        return [self.t_of_lambda(lam_lo + (lam_hi - lam_lo) * k / steps) for k in range(steps + 1)]


def _check_solver(path: str, solver: str) -> None:
    if solver not in SOLVERS[path]:
        raise ValueError(f"solver {solver!r} does not fit the {path} path; choose one of {SOLVERS[path]}")


def path_name(variant: str) -> str:
    if variant in ("qipo-ot", "ot", "bc"):
        return "ot"
    if variant in ("qipo-diff", "vp"):
        return "vp"
    raise ValueError(f"unknown variant {variant!r}; choose qipo-ot or qipo-diff")


def default_solver(variant: str) -> str:
    return SOLVERS[path_name(variant)][0]


def make_path(variant: str, solver: str | None = None) -> ProbabilityPath:
    """The path of a variant with its solver (the variant's default when None)."""
    kind = solver or default_solver(variant)
    return OTPath(kind) if path_name(variant) == "ot" else VPPath(kind)
