"""QGPO's in-support softmax Q-learning critic (DESIGN §4.2 step 2).

The Bellman target only queries Q at actions the behaviour policy would take at s' (pre-sampled once),
so the critic never bootstraps from out-of-support actions:
    y = r + γ(1 − d)·Σ_j softmax_j(β_Q·Q'(s', a_j))·Q'(s', a_j),   Q' = min of the target twin heads.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from training.networks import TwinQ


def softmax_q_target(rewards: Tensor, dones: Tensor, next_q: Tensor, gamma: float, beta_q: float) -> Tensor:
    """rewards [B], dones [B] (terminal only, not timeouts), next_q [B, M] → target [B]."""
    soft_value = (torch.softmax(beta_q * next_q, dim=-1) * next_q).sum(-1)
    return rewards + gamma * (1.0 - dones) * soft_value


class SoftmaxQCritic:
    def __init__(
        self,
        q: TwinQ,
        *,
        gamma: float,
        tau: float,
        beta_q: float,
        lr: float,
        grad_clip: float | None = None,
    ) -> None:
        self.q = q
        self.q_target = copy.deepcopy(q).requires_grad_(False)
        self.gamma, self.tau, self.beta_q, self.grad_clip = gamma, tau, beta_q, grad_clip
        self.opt = torch.optim.Adam(q.parameters(), lr=lr)

    def target(self, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor) -> Tensor:
        """a_next [B, M, A]: behaviour samples at each s'."""
        b, m, a_dim = a_next.shape
        s_rep = s_next.unsqueeze(1).expand(b, m, s_next.shape[-1]).reshape(b * m, -1)
        with torch.no_grad():
            next_q = self.q_target.q_min(s_rep, a_next.reshape(b * m, a_dim)).reshape(b, m)
            return softmax_q_target(r, d, next_q, self.gamma, self.beta_q)

    def update(self, s: Tensor, a: Tensor, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor) -> float:
        y = self.target(r, d, s_next, a_next)
        q1, q2 = self.q(s, a)
        loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.q.parameters(), self.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for p, pt in zip(self.q.parameters(), self.q_target.parameters(), strict=True):
                pt.lerp_(p, self.tau)
        return loss.item()
