"""The fused optimiser recipe must be the same Adam + global-norm clipping as the textbook loop."""

from __future__ import annotations

import copy

import torch

from training import optim
from training.networks import TwinQ


def _loss(net: TwinQ, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    q1, q2 = net(s, a)
    return (q1 - 3.0).pow(2).mean() + (q2 + 1.0).pow(2).mean()


def test_fused_step_matches_reference_adam_with_clipping() -> None:
    torch.manual_seed(0)
    net = TwinQ(5, 2, hidden=16, layers=2)
    ref, initial = copy.deepcopy(net), copy.deepcopy(net)
    s, a = torch.randn(32, 5), torch.randn(32, 2)
    opt = optim.adam(net.parameters(), 1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, foreach=False)
    for _ in range(5):
        optim.step(opt, _loss(net, s, a), list(net.parameters()), grad_clip=0.5)
        ref_opt.zero_grad()
        _loss(ref, s, a).backward()
        grads = [p.grad for p in ref.parameters() if p.grad is not None]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        for g in grads:
            g.mul_(min(1.0, 0.5 / (float(norm) + 1e-6)))
        ref_opt.step()
    for p, r in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    moved = [not torch.equal(p, p0) for p, p0 in zip(net.parameters(), initial.parameters(), strict=True)]
    assert all(moved)
