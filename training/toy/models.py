"""Training and sampling the toy models with the RL trainer's own pieces: `training.efm` for the weighting
and the loss, `training.paths` for the noising and the solver step, `training.policy.integrate` for the
sampling loop and `training.networks.VelocityNet` for the network. Nothing here re-implements them.

The toys have no state, so the network's state input carries a condition instead: a constant 0 for the
EFM / energy-weighted diffusion models, and the CFG label (0 = unconditional, 1 = "good") for the
classifier-free-style pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from training import optim
from training.efm import energy_weights, weighted_matching_loss
from training.networks import VelocityNet
from training.paths import OTPath, ProbabilityPath, VPPath
from training.policy import integrate

Mode = Literal["efm", "cfg"]


@dataclass(frozen=True)
class ToyTrainConfig:
    """How each toy model is trained and sampled (recorded next to the results)."""

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 2e-3  # Adam, cosine-decayed to 0
    hidden: int = 128
    blocks: int = 1
    ot_steps: int = 50  # Euler steps on the OT path
    vp_steps: int = 25  # DPM-Solver-2 steps on the VP path (two network calls each)
    device: str = "cpu"  # where the nets train and sample; draws stay on the CPU generator (same numbers)

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


# Named sizes for `qipo toy bench --size` (one definition for the Makefile, the shard runner and the GPU
# check). "large" is the committed docs/bench/toy-8k run. Its 8,000 steps are what 2spirals at β = 10 needed:
# 4,000 steps left EFM at 2.2x / 2.0x an exact sample (0.0106) over two seeds, 8,000 at 1.6x / 1.3x
# (scripts/toy_probe.py; docs/bench/toy-probes/2spirals-beta10.jsonl).
TOY_SIZES: dict[str, ToyTrainConfig] = {
    "small": ToyTrainConfig(),
    "large": ToyTrainConfig(steps=8000, hidden=256, blocks=2, ot_steps=100),
}


class GuidedVelocity(nn.Module):
    """Classifier-free-style mixture v₀ + w·(v₁ − v₀) of one conditional net's unconditional (label 0)
    and conditional (label 1) outputs; the label-1 law is the β = 1 tilt, so w = β is exact only at
    β = 1. Same (x, t, s) signature as the net, so `integrate` runs it unchanged; `s` is ignored."""

    def __init__(self, net: VelocityNet, scale: float) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        n = x.shape[0]
        labels = torch.cat([x.new_zeros(n, 1), x.new_ones(n, 1)])
        out = self.net(torch.cat([x, x]), t, labels)
        v0, v1 = out[:n], out[n:]
        return v0 + self.scale * (v1 - v0)


def make_path(kind: Literal["ot", "vp"]) -> ProbabilityPath:
    return OTPath() if kind == "ot" else VPPath()


@dataclass
class ToyModel:
    """A trained net and the path it was trained on. The data are used at their raw scale (QGPO's):
    standardising them made energy-weighted diffusion worse on 8gaussians (SWD 0.16 vs 0.11, same budget)."""

    net: VelocityNet
    path: ProbabilityPath


def train_toy_model(
    data: np.ndarray,
    energy: np.ndarray,
    path: ProbabilityPath,
    beta: float,
    config: ToyTrainConfig,
    seed: int,
    mode: Mode = "efm",
    on_step: Callable[[int, float], None] | None = None,
) -> ToyModel:
    """mode "efm": Σ g_i‖v(x_t, t) − u‖², g = softmax_batch(−βE) (β = 0: plain CFM / diffusion).
    mode "cfg": each row gets label 1 with probability ½; label-1 rows are weighted by softmax(−E) over
    the label-1 rows (a β = 1 EFM term, i.e. the conditional p(x | good) ∝ p·e^(−E)), label-0 rows
    uniformly (the unconditional p): the standard condition-dropout recipe with p_drop = ½."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(config.device)
    net = VelocityNet(obs_dim=1, act_dim=2, hidden=config.hidden, blocks=config.blocks).to(dev)
    params = list(net.parameters())
    opt = optim.adam(params, config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, config.steps) / config.steps))
    )
    xs = torch.as_tensor(data, dtype=torch.float32).to(dev)
    es = torch.as_tensor(energy, dtype=torch.float32).to(dev)
    b = config.batch_size
    for step in range(config.steps):
        idx = torch.randint(0, xs.shape[0], (b,), generator=gen).to(dev)
        x1, e = xs[idx], es[idx]
        x0 = torch.randn(b, 2, generator=gen).to(dev)
        t = path.sample_t(b, gen).to(dev)
        xt, target = path.interpolate(x0, x1, t)
        weights: Tensor | None
        if mode == "cfg":
            label = (torch.rand(b, generator=gen) < 0.5).float().to(dev)
            good = label.bool()
            w = torch.empty(b, device=dev)
            w[good] = energy_weights(e[good], 1.0)
            w[~good] = 1.0 / max(int((~good).sum()), 1)
            cond, weights = label.unsqueeze(-1), w
        else:
            cond = torch.zeros(b, 1, device=dev)
            weights = energy_weights(e, beta) if beta != 0 else None
        loss = weighted_matching_loss(net(xt, t, cond), target, weights)
        optim.step(opt, loss, params, None)
        sched.step()
        if on_step is not None:
            on_step(step, float(loss))
    return ToyModel(net.eval(), path)


@torch.no_grad()
def sample_toy_model(
    model: ToyModel, n: int, steps: int, seed: int, guidance: float | None = None
) -> np.ndarray:
    """n samples by the path's solver from seeded noise; `guidance` w mixes the CFG pair (else label 0)."""
    dev = next(model.net.parameters()).device
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)).to(dev)
    # GuidedVelocity has VelocityNet's call signature; `integrate` only calls it.
    net = model.net if guidance is None else cast(VelocityNet, GuidedVelocity(model.net, guidance))
    x = integrate(net, model.path, torch.zeros(n, 1, device=dev), noise, steps)
    return x.cpu().numpy().astype(np.float64)
