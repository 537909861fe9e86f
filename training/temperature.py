"""How sharp QIPO's support-set weights are, and how to keep that sharpness the same across datasets.

The paper's weights are softmax_j(β·Q(s, a_j)). Q's scale follows the reward scale and the dataset's return
spread, so one β is an argmax over a noisy critic on one dataset and near-uniform on another. Two
scale-free modes fix one number per renewal from a fixed probe of states, so lazy and eager renewal use the
same temperature:

- raw:    β as given (the paper);
- spread: Q / σ̂ with σ̂ the mean over probe states of the std of Q over their support set: β then means
          "weight per standard deviation of Q within a state", whatever the units of Q;
- ess:    β chosen by bisection so that the mean effective sample size of the probe's weights is
          `target_ess`·(M+1), in the spirit of SAC's entropy target.

The effective sample size of weights w (Σw = 1) is 1/Σw²: M+1 for uniform weights, 1 for an argmax.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from training.efm import q_weights

TemperatureMode = Literal["raw", "spread", "ess"]


def effective_sample_size(weights: Tensor, dim: int = -1) -> Tensor:
    """1 / Σ w² along `dim` (weights normalised along it)."""
    return 1.0 / weights.pow(2).sum(dim=dim)


def q_spread(q: Tensor) -> float:
    """Mean over states (rows) of the std of Q over the support set (columns)."""
    return float(q.std(dim=-1, unbiased=False).mean())


def beta_for_ess(q: Tensor, target_fraction: float, iters: int = 50) -> float:
    """The β ≥ 0 at which mean ESS(softmax(β·Q))/(M+1) ≈ `target_fraction` (ESS falls as β grows)."""
    m1 = q.shape[-1]
    if not 0 < target_fraction < 1:
        raise ValueError(f"target ESS fraction must lie in (0, 1), got {target_fraction}")

    def ess_fraction(beta: float) -> float:
        return float(effective_sample_size(q_weights(q, beta)).mean()) / m1

    spread = q_spread(q)
    if spread <= 0 or not math.isfinite(spread):
        return 0.0  # every action of every state has the same Q: no β can sharpen the weights
    lo, hi = 0.0, 1.0 / spread
    while ess_fraction(hi) > target_fraction and hi < 1e6 / spread:
        lo, hi = hi, hi * 4
    for _ in range(iters):  # bisection in log space once bracketed
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        if ess_fraction(mid) > target_fraction:
            lo = mid
        else:
            hi = mid
    return hi


def effective_beta(q_probe: Tensor, mode: TemperatureMode, beta: float, target_ess: float) -> float:
    """The inverse temperature applied to raw Q for one renewal, from the probe's Q [P, M+1]."""
    if mode == "raw":
        return beta
    if mode == "spread":
        spread = q_spread(q_probe)
        return beta / spread if spread > 0 else 0.0
    return beta_for_ess(q_probe, target_ess)


def weight_stats(weights: Tensor) -> dict[str, float]:
    """ESS/(M+1) and the mean weight of the dataset action (the last column), over states."""
    m1 = weights.shape[-1]
    return {
        "ess_fraction": round(float(effective_sample_size(weights).mean()) / m1, 4),
        "data_weight": round(float(weights[..., -1].mean()), 4),
    }


def probe_indices(n: int, size: int, seed: int) -> Tensor:
    """A fixed random subset of state rows (the same for every renewal of a run)."""
    gen = torch.Generator(device="cpu").manual_seed(seed + 7_919)
    return torch.randperm(n, generator=gen, device="cpu")[: min(size, n)]
