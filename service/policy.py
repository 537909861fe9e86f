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
    def low(self) -> np.ndarray: ...

    @property
    def high(self) -> np.ndarray: ...

    def act(self, states: np.ndarray, noise: np.ndarray) -> Actions: ...


def bounded(raw: np.ndarray, low: np.ndarray, high: np.ndarray) -> Actions:
    """Clamp `raw` (float32, modified in place) into [low, high] and flag the rows that touch a bound.

    Plain ufuncs, not `np.clip`/`ndarray.any`: their Python wrappers cost more than the work on a few
    floats. The exported graph clamps already; this keeps the guarantee for any graph and for the last
    ulp of its rounding.
    """
    np.maximum(raw, low, out=raw)
    np.minimum(raw, high, out=raw)
    at_bound = np.less_equal(raw, low)
    np.logical_or(at_bound, np.greater_equal(raw, high), out=at_bound)
    return Actions(raw, np.logical_or.reduce(at_bound, axis=1))


def seeded_noise(seed: int, rows: int, width: int) -> np.ndarray:
    """The noise [rows, width] (float32) that `seed` stands for: standard normal from `default_rng(seed)`."""
    return np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32)
