"""One optimiser recipe for every network we train: Adam with CPU-fused kernels and foreach clipping.

At batch 256 our networks are small enough that per-parameter Python/kernel overhead is a large part of a
step; the fused Adam (one kernel over all parameters) and the foreach gradient norm remove most of it
without changing the update (same Adam maths, float32).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from training import distributed


def adam(params: Iterable[Tensor], lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, fused=True)


def step(opt: torch.optim.Optimizer, loss: Tensor, params: Iterable[Tensor], grad_clip: float | None) -> None:
    """zero_grad → backward → (under torchrun: average across ranks) → (clip the global norm to
    `grad_clip`) → Adam step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(opt)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    opt.step()
