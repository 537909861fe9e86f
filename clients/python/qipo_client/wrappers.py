"""Behaviours over any `Policy`, as wrappers that are `Policy`s themselves (openpi's pattern): they stack,
and whatever takes a policy (evaluation, a robot loop) takes them unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from qipo_client.policy import Noise, Policy, PolicyMetadata, Seeds, step_seed


class Wrapper:
    """Passes everything to the wrapped policy; subclasses override what they change."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        return self.policy.infer(states, noise)

    def reset(self) -> None:
        self.policy.reset()


@dataclass(frozen=True)
class Step:
    """One recorded call: what went in and what came out."""

    states: np.ndarray
    actions: np.ndarray
    seeds: Optional[Seeds]


class Recording(Wrapper):
    """Keeps every call of the current episode in `steps`; `reset` starts a new episode (the finished
    ones stay in `episodes`)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.steps: list[Step] = []
        self.episodes: list[list[Step]] = []

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        actions = self.policy.infer(states, noise)
        seeds = noise if isinstance(noise, Seeds) else None
        self.steps.append(Step(np.array(states, dtype=np.float32), np.array(actions), seeds))
        return actions

    def reset(self) -> None:
        if self.steps:
            self.episodes.append(self.steps)
        self.steps = []
        super().reset()


class Seeded(Wrapper):
    """Reproducible noise for callers that pass none: row r of the k-th call since `reset` gets
    `Seeds(step_seed(seed, r, k))`, the rule evaluation uses, so a robot loop can be replayed exactly
    (locally or through a server). Noise passed explicitly goes through unchanged."""

    def __init__(self, policy: Policy, seed: int) -> None:
        super().__init__(policy)
        self.seed = seed
        self.calls = 0

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        if noise is None:
            noise = Seeds([step_seed(self.seed, row, self.calls) for row in range(len(states))])
        self.calls += 1
        return self.policy.infer(states, noise)

    def reset(self) -> None:
        self.calls = 0
        super().reset()
