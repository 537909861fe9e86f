"""The one interface the serving path needs from a model, and the rule that turns a seed into noise.

`Policy` is what the micro-batcher calls: `act(states, noise)` gives actions already inside the manifest's
bounds plus which rows sit at a bound, so every caller gets the same robot-safety guarantee without knowing
how the model runs. `service.runtime.OnnxPolicy` implements it; a test double or another runtime can too.

`seeded_noise` is the seed-to-noise rule. A request that sends `seed` gets exactly this noise, and
`training.eval` draws its in-process noise with the same function, so an evaluation through the server
reproduces an in-process one and the two cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from service.artifact import Manifest


class Actions(NamedTuple):
    actions: np.ndarray  # [B, A] float32, inside [low, high]
    saturated: np.ndarray  # [B] bool: the row has a component at (or clipped to) a bound


class Policy(Protocol):
    """A loaded sampler: states [B, obs_dim] and noise [B, noise_dim] (float32) → bounded actions."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def obs_dim(self) -> int: ...

    @property
    def act_dim(self) -> int: ...

    @property
    def noise_dim(self) -> int: ...

    @property
    def bounds(self) -> Bounds: ...

    def act(self, states: np.ndarray, noise: np.ndarray) -> Actions: ...


# Up to this many action values, plain Python floats clamp and flag faster than NumPy: each ufunc call on a
# tiny array costs ~2 µs (six of them per flush), a Python comparison ~50 ns.
SMALL_ACTIONS = 64


class Bounds:
    """The action bounds of one model, as arrays (for big batches) and as Python floats (for small ones)."""

    __slots__ = ("high", "high_list", "low", "low_list")

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)
        if self.low.shape != self.high.shape or not bool(np.all(self.low < self.high)):
            raise ValueError("every action low bound must be below its high bound")
        self.low_list: list[float] = self.low.tolist()
        self.high_list: list[float] = self.high.tolist()

    def apply(self, raw: np.ndarray) -> Actions:
        """Clamp `raw` (float32 [B, A], modified in place) into [low, high] and flag the rows at a bound.

        The exported graph clamps already; this keeps the guarantee for any graph and for the last ulp of
        its rounding. Both ways give the same result, NaN included (it stays NaN and is not flagged, as with
        `np.maximum`/`np.minimum`); tests/service/test_policy_bounds.py holds them to it.
        """
        if raw.size <= SMALL_ACTIONS:
            return self._apply_small(raw)
        np.maximum(raw, self.low, out=raw)
        np.minimum(raw, self.high, out=raw)
        at_bound = np.less_equal(raw, self.low)
        np.logical_or(at_bound, np.greater_equal(raw, self.high), out=at_bound)
        return Actions(raw, np.logical_or.reduce(at_bound, axis=1))

    def _apply_small(self, raw: np.ndarray) -> Actions:
        low, high = self.low_list, self.high_list
        flags = []
        for i, row in enumerate(raw.tolist()):
            at = False
            for j, x in enumerate(row):
                if x <= low[j]:
                    at = True
                    if x < low[j]:
                        raw[i, j] = low[j]
                elif x >= high[j]:
                    at = True
                    if x > high[j]:
                        raw[i, j] = high[j]
            flags.append(at)
        return Actions(raw, np.array(flags, dtype=bool))


def seeded_noise(seed: int, rows: int, width: int) -> np.ndarray:
    """The noise [rows, width] (float32) that `seed` stands for: standard normal from `default_rng(seed)`."""
    return np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32)
