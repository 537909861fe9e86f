"""The trust region of QIPO's improvement weights: how much of each support set's weight stays on its
dataset action (the last column).

softmax(β·Q) alone follows the critic's ranking within a state, including its extrapolation errors on the
policy's own samples; moving λ of each row onto the dataset action makes the target the mixture
(1 − λ)·π_l·exp(βQ)/Z + λ·μ, which keeps the policy on the data's support. `anchor_gate` picks whether that
anchor holds everywhere, only where the critic rates the dataset action at least average, or as far as its
Q-rank allows (`QIPOConfig.anchor_gate`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def anchor_weights(weights: Tensor, anchor: float, gate: Tensor | None = None) -> Tensor:
    """(1 − λ)·g + λ·e_data over each support set (the dataset action is the last column): rows still sum
    to one, and the dataset action keeps at least λ of its state's weight. `gate` [..., 1] (0 or 1) limits
    the anchor to the rows it marks."""
    if anchor == 0:
        return weights
    lam = anchor if gate is None else anchor * gate
    out = weights * (1 - lam)
    out[..., -1:] += lam
    return out


def ranked_anchor_weights(weights: Tensor, q: Tensor, anchor: float) -> Tensor:
    """The anchor as far as the critic agrees with it: λ of each row moves onto the dataset action (the
    last column), but its weight is capped at that of the lowest-Q policy sample the critic rates above it,
    and the row is renormalised. A dataset action Q ranks first keeps the full anchor (as `anchor_weights`);
    one it ranks below every sample rises at most to the lowest sample's weight; between, the anchor follows
    its Q-rank. The weights
    stay non-decreasing in Q within each row and sum to one, so random dataset actions in mixed data are
    not held onto, while good ones are."""
    if anchor == 0:
        return weights
    scaled = weights * (1 - anchor)
    raised = scaled[..., -1:] + anchor
    above = q[..., :-1] > q[..., -1:]
    cap = torch.where(above, scaled[..., :-1], torch.full_like(scaled[..., :-1], torch.inf))
    data = torch.minimum(raised, cap.amin(dim=-1, keepdim=True))
    out = torch.cat([scaled[..., :-1], data], dim=-1)
    return out / out.sum(dim=-1, keepdim=True)


def advantage_gate(q: Tensor) -> Tensor:
    """[..., 1]: 1 where the dataset action's Q (last column) is at least the mean Q of the policy samples."""
    return (q[..., -1:] >= q[..., :-1].mean(dim=-1, keepdim=True)).to(q.dtype)


def trusted_anchor(anchor: float, adv_corr: float | None, full_trust: float) -> float:
    """The anchor scaled down by the critic's validated within-state ranking: `adv_corr` is the held-out
    correlation of Q's advantage with the returns' (`training.diagnostics.advantage_vs_returns`). At or
    below 0 (or unmeasured) the full λ holds; at `full_trust` and above the anchor is released."""
    if adv_corr is None:
        return anchor
    return anchor * (1.0 - min(max(adv_corr / full_trust, 0.0), 1.0))
