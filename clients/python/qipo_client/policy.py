"""The one policy contract: what a model, a server or a wrapper offers to whoever needs actions.

`Policy.infer(states, noise=None)` takes raw states [B, obs_dim] and gives actions [B, act_dim] (float32,
inside the bounds in `metadata`); a chunked policy (`metadata.action_horizon` H > 1) gives the chunks
[B, H, act_dim] of H actions to execute one per `metadata.control_period_s` (`qipo_client.chunking` runs
them in real time). `noise` says which noise the sampler starts from:

- `None`: the policy draws its own (a local model from its generator, a server from its own);
- `Seeds`: one seed per row, turned into noise by the seed → noise rule below (`seeded_noise`). A server
  gets the seeds themselves and applies the same rule, so a run through it reproduces an in-process one;
- an array [B, noise_dim]: exactly this noise (local policies only; a server draws its noise from a seed).

The ONNX artifact, the torch flow policy, the server (`RemotePolicy`), the offline-RL peers and every
wrapper (`qipo_client.wrappers`) implement this protocol, so evaluation, the micro-batcher and export
parity take any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class PolicyMetadata:
    """What a caller needs to know about a policy before calling it."""

    name: str
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    noise_dim: int = 0  # width of one row of noise; 0 means act_dim (best-of-N takes N·act_dim)
    version: Optional[int] = None  # the registry version, when the policy came from one
    env_id: Optional[str] = None  # the gymnasium env it was trained for, when recorded
    # H: actions per call. A chunked policy (H > 1) answers [B, H, act_dim], to execute one per period.
    action_horizon: int = 1
    control_period_s: Optional[float] = None  # seconds between actions (the env's dt), when recorded
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # e.g. the full manifest

    @property
    def noise_width(self) -> int:
        return self.noise_dim or self.act_dim


@dataclass(frozen=True)
class Seeds:
    """One noise seed per row: the row's noise is `seeded_noise(seed, 1, width)`."""

    values: tuple[int, ...]

    def __init__(self, values: Sequence[int]) -> None:
        object.__setattr__(self, "values", tuple(int(v) for v in values))

    def __len__(self) -> int:
        return len(self.values)

    def noise(self, width: int) -> np.ndarray:
        """The rows' noise [len, width], float32."""
        if not self.values:
            return np.empty((0, width), dtype=np.float32)
        return np.concatenate([seeded_noise(seed, 1, width) for seed in self.values])


Noise = Union[np.ndarray, Seeds, None]


@runtime_checkable
class Policy(Protocol):
    """States [B, obs_dim] → actions [B, act_dim] (chunks [B, H, act_dim] for H > 1) float32 within the
    bounds; see the module docstring."""

    @property
    def metadata(self) -> PolicyMetadata: ...

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray: ...

    def reset(self) -> None:
        """Start a new episode: forget whatever the policy or a wrapper keeps between calls."""
        ...


def seeded_noise(seed: int, rows: int, width: int) -> np.ndarray:
    """The noise [rows, width] (float32) that `seed` stands for: standard normal from `default_rng(seed)`.

    The server applies it to a request's `seed`, and local policies to `Seeds`: one rule on both sides.
    """
    return np.random.default_rng(seed).standard_normal((rows, width), dtype=np.float32)


def step_seed(seed: int, episode: int, step: int) -> int:
    """The seed of one (episode, step) of an evaluation or a `Seeded` run: what a robot would send."""
    return ((seed * 1_000_003 + episode) * 100_003 + step) % (2**63)


def resolve_noise(noise: Noise, rows: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The float32 noise [rows, width] that `noise` stands for (`None`: a draw from `rng`); a ValueError
    that says what was expected when an array has the wrong shape."""
    if noise is None:
        return rng.standard_normal((rows, width), dtype=np.float32)
    if isinstance(noise, Seeds):
        if len(noise) != rows:
            raise ValueError(f"{len(noise)} seeds for {rows} states: pass one seed per row")
        return noise.noise(width)
    arr = np.asarray(noise, dtype=np.float32)
    if arr.shape != (rows, width):
        raise ValueError(
            f"noise has shape {arr.shape}; this policy needs [{rows}, {width}] (one row per state)"
        )
    return arr


def as_states(states: Any, obs_dim: int) -> np.ndarray:
    """States as float32 [B, obs_dim] (one state [obs_dim] becomes [1, obs_dim]); ValueError otherwise."""
    arr = np.asarray(states, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != obs_dim:
        raise ValueError(f"states have shape {arr.shape}; this policy needs [batch, {obs_dim}]")
    return arr
