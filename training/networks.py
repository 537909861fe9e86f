"""QGPO-style networks: Gaussian Fourier time features, a state embedding and residual blocks.

SiLU in the velocity net, ReLU in the critics: ONNX Runtime's CPU Softplus kernel (used by a default Mish
export) is slow (docs/architecture.md, "Serving hot path").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianFourierTime(nn.Module):
    freqs: Tensor

    def __init__(self, dim: int = 32, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale, persistent=True)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t.reshape(-1, 1) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width * 2)
        self.fc2 = nn.Linear(width * 2, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h))))


class VelocityNet(nn.Module):
    """v_θ(x, t; s): x the (normalised) action being transported, t the flow time, s the normalised state.

    The input layer acts on [x, time features, state embedding]; it is applied as three slices of one
    weight so the state part is computed once per state and the time part once per solver step. A sampler
    then pays only the residual blocks per step (`condition` + `velocity`), which is what makes support-set
    renewal and the exported K-step graph cheap.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int = 256, blocks: int = 2, time_dim: int = 32
    ) -> None:
        super().__init__()
        self.act_dim, self.hidden = act_dim, hidden
        self.time = nn.Sequential(GaussianFourierTime(time_dim), nn.Linear(time_dim, hidden), nn.SiLU())
        self.state = nn.Sequential(nn.Linear(obs_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(act_dim + 2 * hidden, hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(blocks)])
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, act_dim))

    def condition(self, s: Tensor) -> Tensor:
        """State part of the input layer (bias included): [B, S] → [B, H]."""
        w = self.inp.weight[:, self.act_dim + self.hidden :]
        return nn.functional.linear(self.state(s), w, self.inp.bias)

    def time_features(self, t: Tensor) -> Tensor:
        """Time part of the input layer: [T] → [T, H] (T = 1 broadcasts over the batch)."""
        w = self.inp.weight[:, self.act_dim : self.act_dim + self.hidden]
        return nn.functional.linear(self.time(t), w)

    def velocity(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Network output from x [B, A], t [B] or [1] and a precomputed `condition` [B, H]."""
        return self.velocity_at(x, self.time_features(t), cond)

    def velocity_at(self, x: Tensor, time_part: Tensor, cond: Tensor) -> Tensor:
        """`velocity` with the time part of the input layer precomputed ([1, H] or [B, H])."""
        h = nn.functional.linear(x, self.inp.weight[:, : self.act_dim]) + time_part + cond
        return self.out(self.blocks(h))

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return self.velocity(x, t, self.condition(s))


def mlp(inp: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    """`layers` hidden Linear+ReLU layers (ReLU as in QGPO/IQL critics: cheaper than SiLU on CPU, which
    matters where the critic's target evaluates 16 actions per next state)."""
    mods: list[nn.Module] = []
    width = inp
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out))
    return nn.Sequential(*mods)


class TwinQ(nn.Module):
    """Two independent Q heads on (normalised state, normalised action); `forward` returns both.

    Defaults are QGPO's critic (two hidden layers of 256, as in IQL-PyTorch's TwinQ)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, layers, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, layers, 1)

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        sa = torch.cat([s, a], dim=-1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

    def q_min(self, s: Tensor, a: Tensor) -> Tensor:
        q1, q2 = self(s, a)
        return torch.minimum(q1, q2)
