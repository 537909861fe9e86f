"""The policy as one module: raw state + noise → action in env units. This module *is* what gets
exported, so evaluation and serving run the same computation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from training.networks import VelocityNet
from training.paths import ProbabilityPath


class Normalizer(nn.Module):
    """Observation standardisation and action scaling to [−1, 1], stored as buffers (exported in-graph)."""

    obs_mean: Tensor
    obs_std: Tensor
    act_low: Tensor
    act_high: Tensor

    def __init__(self, obs_mean: np.ndarray, obs_std: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(np.maximum(obs_std, 1e-3), dtype=torch.float32))
        self.register_buffer("act_low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(high, dtype=torch.float32))

    @classmethod
    def fit(cls, observations: np.ndarray, low: np.ndarray, high: np.ndarray) -> Normalizer:
        return cls(observations.mean(0), observations.std(0), low, high)

    def state(self, s: Tensor) -> Tensor:
        return (s - self.obs_mean) / self.obs_std

    def action_to_unit(self, a: Tensor) -> Tensor:
        return 2 * (a - self.act_low) / (self.act_high - self.act_low) - 1

    def action_from_unit(self, x: Tensor) -> Tensor:
        return self.act_low + (x.clamp(-1.0, 1.0) + 1) * 0.5 * (self.act_high - self.act_low)


def integrate(net: VelocityNet, path: ProbabilityPath, s_norm: Tensor, noise: Tensor, steps: int) -> Tensor:
    """K solver steps of the path from noise to a unit-box action (unrolled when exported)."""

    def fn(x: Tensor, t: float) -> Tensor:
        return net(x, torch.full((1,), t, dtype=x.dtype), s_norm)

    x = noise
    grid = path.time_grid(steps)
    for k in range(steps):
        x = path.step(fn, x, grid[k], grid[k + 1])
    return x


class FlowPolicy(nn.Module):
    """state [B, S] (raw), noise [B, A] → action [B, A] (env units, within bounds)."""

    net: VelocityNet
    normalizer: Normalizer

    def __init__(self, net: VelocityNet, normalizer: Normalizer, path: ProbabilityPath, steps: int) -> None:
        super().__init__()
        self.net = net
        self.normalizer = normalizer
        self.path = path
        self.steps = steps

    def forward(self, state: Tensor, noise: Tensor) -> Tensor:
        x = integrate(self.net, self.path, self.normalizer.state(state), noise, self.steps)
        return self.normalizer.action_from_unit(x)

    @torch.no_grad()
    def act_numpy(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        out = self(torch.as_tensor(state, dtype=torch.float32), torch.as_tensor(noise, dtype=torch.float32))
        return out.numpy()
