"""Energy-weighted flow matching (docs/architecture.md): one implementation of the weighting, used by the RL
trainer and the 2-D toys alike.

The minimiser of Σ_i g_i ‖v_θ(x_t^i, t_i) − u_t^i‖² with g = softmax(−βE(x1)) is the exact guided field
toward q ∝ p·exp(−βE) (Theorem 4.3 of arXiv 2503.04975). With β = 0 the weights are uniform and the loss
is plain conditional flow matching.
"""

from __future__ import annotations

import torch
from torch import Tensor


def energy_weights(energy: Tensor, beta: float, dim: int = -1) -> Tensor:
    """softmax(−β·E) along `dim`: over the batch for EFM, over a state's support set for QIPO."""
    return torch.softmax(-beta * energy, dim=dim)


def q_weights(q: Tensor, beta: float, dim: int = -1) -> Tensor:
    """QIPO's weights: energy E = −Q, so softmax(β·Q)."""
    return energy_weights(-q, beta, dim=dim)


def weighted_matching_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ w·‖pred − target‖² / Σ w, the squared error summed over the last (data) axis.

    `weights` has the shape of `pred` without its last axis: [B] normalised over the batch (EFM) gives
    Σ_i g_i‖·‖²; [B, M] normalised per row (QIPO's support sets) gives the mean over states of
    Σ_j g_ij‖·‖². `None` (or uniform weights) is plain CFM: the mean squared error.
    """
    per_sample = (pred - target).pow(2).sum(dim=-1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights shape {tuple(weights.shape)} must be {tuple(per_sample.shape)}")
    return (weights.detach() * per_sample).sum() / weights.detach().sum()
