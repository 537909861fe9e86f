"""Critics for QIPO's step 2 (docs/architecture.md): QGPO's in-support softmax Q-learning (default) or IQL.

softmax-q: the Bellman target only queries Q at actions the behaviour policy would take at s'
(pre-sampled once), so the critic never bootstraps from out-of-support actions:
    y = r + γ(1 − d)·Σ_j softmax_j(β_Q·Q'(s', a_j))·Q'(s', a_j),   Q' = min of the target twin heads.
iql: no action is ever sampled; V is fitted by expectile regression onto Q'(s, a) at dataset actions and
    y = r + γ(1 − d)·V(s')   (Kostrikov et al. 2021), so the critic phase needs no behaviour policy.
Both keep a Polyak-averaged target twin Q; both are used the same way afterwards (`q.q_min`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from training import optim
from training.networks import TwinQ, mlp


def softmax_q_target(rewards: Tensor, dones: Tensor, next_q: Tensor, gamma: float, beta_q: float) -> Tensor:
    """rewards [B], dones [B] (terminal only, not timeouts), next_q [B, M] → target [B]."""
    soft_value = (torch.softmax(beta_q * next_q, dim=-1) * next_q).sum(-1)
    return rewards + gamma * (1.0 - dones) * soft_value


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's asymmetric L2 on diff = Q − V: weight τ where V is below Q, 1 − τ where above."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


class Critic:
    """Twin Q, its Polyak target and optimiser; subclasses define the Bellman target."""

    needs_next_actions = True

    def __init__(self, q: TwinQ, *, gamma: float, tau: float, lr: float, grad_clip: float | None) -> None:
        self.q = q
        self.q_target = copy.deepcopy(q).requires_grad_(False)
        self.gamma, self.tau, self.grad_clip = gamma, tau, grad_clip
        self._params: list[Tensor] = list(q.parameters())
        self._target_params: list[Tensor] = list(self.q_target.parameters())
        self.opt = optim.adam(self._params, lr)

    def _fit_q(self, s: Tensor, a: Tensor, y: Tensor) -> Tensor:
        q1, q2 = self.q(s, a)
        loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        optim.step(self.opt, loss, self._params, self.grad_clip)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._params, self.tau)
        return loss.detach()

    def update(
        self, s: Tensor, a: Tensor, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor | None
    ) -> Tensor:
        """One gradient step on a batch; returns the detached loss (the caller decides when to sync)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "opt": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.opt.load_state_dict(state["opt"])


class SoftmaxQCritic(Critic):
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
        super().__init__(q, gamma=gamma, tau=tau, lr=lr, grad_clip=grad_clip)
        self.beta_q = beta_q

    @torch.no_grad()
    def target(self, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor) -> Tensor:
        """a_next [B, M, A]: behaviour samples at each s'."""
        b, m, a_dim = a_next.shape
        s_rep = s_next.unsqueeze(1).expand(b, m, s_next.shape[-1]).reshape(b * m, -1)
        next_q = self.q_target.q_min(s_rep, a_next.reshape(b * m, a_dim)).reshape(b, m)
        return softmax_q_target(r, d, next_q, self.gamma, self.beta_q)

    def update(
        self, s: Tensor, a: Tensor, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor | None
    ) -> Tensor:
        if a_next is None:
            raise ValueError("the softmax-q critic needs behaviour samples at s' (a_next)")
        return self._fit_q(s, a, self.target(r, d, s_next, a_next))


class IQLCritic(Critic):
    needs_next_actions = False

    def __init__(
        self,
        q: TwinQ,
        *,
        obs_dim: int,
        hidden: int,
        layers: int,
        gamma: float,
        tau: float,
        expectile: float,
        lr: float,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(q, gamma=gamma, tau=tau, lr=lr, grad_clip=grad_clip)
        self.expectile = expectile
        self.v: nn.Module = mlp(obs_dim, hidden, layers, 1)
        self.v_opt = optim.adam(self.v.parameters(), lr)

    def value(self, s: Tensor) -> Tensor:
        return self.v(s).squeeze(-1)

    @torch.no_grad()
    def target(self, r: Tensor, d: Tensor, s_next: Tensor) -> Tensor:
        return r + self.gamma * (1.0 - d) * self.value(s_next)

    def update(
        self, s: Tensor, a: Tensor, r: Tensor, d: Tensor, s_next: Tensor, a_next: Tensor | None = None
    ) -> Tensor:
        v_loss = self.update_value(s, a)
        return self._fit_q(s, a, self.target(r, d, s_next)) + v_loss

    def update_value(self, s: Tensor, a: Tensor) -> Tensor:
        """Expectile regression of V(s) onto the target Q at dataset actions (IQL's value step)."""
        with torch.no_grad():
            q_data = self.q_target.q_min(s, a)
        v_loss = expectile_loss(q_data - self.value(s), self.expectile)
        optim.step(self.v_opt, v_loss, (), None)  # no clipping: params unused
        return v_loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"v": self.v.state_dict(), "v_opt": self.v_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.v.load_state_dict(state["v"])
        self.v_opt.load_state_dict(state["v_opt"])
