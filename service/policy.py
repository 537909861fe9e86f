"""What the server needs from a model beyond the client contract, and the bounds guarantee.

The contract itself (`Policy`: `infer(states, noise)`, `reset()`, `metadata`; the seed → noise rule) lives in
the client distribution, `qipo_client.policy`, and is imported here, so a robot, `training.eval` and the
micro-batcher all hold the same definition. `ServedPolicy` adds what only serving needs: the verified
manifest (for `/v1/models`) and a warm-up before the first robot is answered.

`Bounds` keeps actions inside the manifest's bounds and says which rows sit at one (`clipped` in a reply),
so every caller gets the same robot-safety guarantee without knowing how the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from qipo_client.policy import Noise, Policy, PolicyMetadata, Seeds, seeded_noise

from service.artifact import Manifest

__all__ = [
    "SMALL_ACTIONS",
    "Bounds",
    "Noise",
    "Policy",
    "PolicyMetadata",
    "PrefixPolicy",
    "Seeds",
    "ServedPolicy",
    "at_bound",
    "seeded_noise",
]


class ServedPolicy(Policy, Protocol):
    """A `Policy` loaded from a verified artifact, as the model manager holds it."""

    @property
    def manifest(self) -> Manifest: ...

    def warmup(self, batches: int) -> None: ...


@runtime_checkable
class PrefixPolicy(Protocol):
    """A chunked policy that takes the graph's inpainting inputs as they are, one (d, L) per row: what the
    micro-batcher needs to run requests with and without a prefix in one call."""

    def infer_prefixed(
        self,
        states: np.ndarray,
        noise: np.ndarray,
        prefix: np.ndarray,
        committed: np.ndarray,
        prefix_len: np.ndarray,
    ) -> np.ndarray:
        """Chunks [B, H, A] in the bounds; `prefix` [B, H, A] zero-padded, `committed`, `prefix_len` [B]
        float32 (service.chunks.PrefixInputs)."""
        ...


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

    def clamp(self, raw: np.ndarray) -> np.ndarray:
        """Clamp `raw` (float32 [B, A], modified in place) into [low, high] and return it.

        The exported graph clamps already; this keeps the guarantee for any graph and for the last ulp of
        its rounding. NaN stays NaN (as with `np.maximum`/`np.minimum`) on both paths;
        tests/service/test_policy_bounds.py holds them to it.
        """
        if raw.size <= SMALL_ACTIONS:
            low, high = self.low_list, self.high_list
            for i, row in enumerate(raw.tolist()):
                for j, x in enumerate(row):
                    if x < low[j]:
                        raw[i, j] = low[j]
                    elif x > high[j]:
                        raw[i, j] = high[j]
            return raw
        np.maximum(raw, self.low, out=raw)
        np.minimum(raw, self.high, out=raw)
        return raw

    def at_bound(self, actions: np.ndarray) -> np.ndarray:
        """bool [B]: the row has a component at a bound (after `clamp`: at it or clipped to it)."""
        return at_bound(actions, self.low_list, self.high_list)


def at_bound(actions: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """bool [B]: which rows of `actions` [B, A] have a component at (or beyond) a bound; NaN is not."""
    if actions.size <= SMALL_ACTIONS:
        flags = []
        for row in actions.tolist():
            at = False
            for j, x in enumerate(row):
                if x <= low[j] or x >= high[j]:
                    at = True
                    break
            flags.append(at)
        return np.array(flags, dtype=bool)
    hit = np.less_equal(actions, np.asarray(low, dtype=np.float32))
    np.logical_or(hit, np.greater_equal(actions, np.asarray(high, dtype=np.float32)), out=hit)
    rows: np.ndarray = np.logical_or.reduce(hit, axis=1)
    return rows
