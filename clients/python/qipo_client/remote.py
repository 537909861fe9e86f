"""The server as a `Policy`: what `qipo eval --server` and any other caller of the contract runs remotely.

A server draws noise from a seed, never from an array, so `infer` takes `Seeds` (one request per row, sent
concurrently, as separate robots would; the micro-batcher joins them) or `None` (one batch request, the
server's own noise). `Seeds` through the server give exactly the actions a local policy gives for the same
seeds, because both apply `qipo_client.policy.seeded_noise`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import numpy as np

from qipo_client.http import AsyncPolicyClient
from qipo_client.policy import Noise, PolicyMetadata, Seeds, as_states


class RemotePolicy:
    """`Policy` over `POST /act`. Owns an event loop and a connection pool: use as a context manager.

    A chunked model (action_horizon H > 1) answers chunks [B, H, A], and `infer_inpainted` sends the
    previous chunk's remaining actions with them (`qipo_client.chunking.InpaintingPolicy`), so a
    `ChunkedController` runs against the server. `robot_id` goes with every request (a robot stays on
    one version through a canary split); `model` pins an alias or version.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        format: str = "msgpack",
        robot_id: Optional[str] = None,
        model: Optional[str] = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = AsyncPolicyClient(base_url, timeout, format)
        self._metadata: Optional[PolicyMetadata] = None
        self.robot_id, self.model = robot_id, model

    @property
    def metadata(self) -> PolicyMetadata:
        """The served model's, read once from /v1/models (NoAction / ServerError if unreachable)."""
        if self._metadata is None:
            self._metadata = self._loop.run_until_complete(self._client.metadata())
        return self._metadata

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        return self._infer(states, noise, None, None)

    def infer_inpainted(
        self, states: np.ndarray, prefix: np.ndarray, committed: Any, noise: Noise = None
    ) -> np.ndarray:
        """Chunks [B, H, A] inpainted by the server toward `prefix` [B, L, A], of which the first
        `committed` (an int or one per row) run before the new chunk starts."""
        rows = as_states(states, self.metadata.obs_dim)
        arr = np.asarray(prefix, dtype=np.float32)
        if arr.ndim == 2 and len(rows) == 1:
            arr = arr[None]
        if arr.ndim != 3 or len(arr) != len(rows):
            raise ValueError(f"prefix has shape {arr.shape}; pass [{len(rows)}, L, act_dim] (one per state)")
        return self._infer(rows, noise, arr, committed)

    def _infer(
        self, states: np.ndarray, noise: Noise, prefix: Optional[np.ndarray], committed: Any
    ) -> np.ndarray:
        rows = as_states(states, self.metadata.obs_dim)
        if isinstance(noise, Seeds):
            if len(noise) != len(rows):
                raise ValueError(f"{len(noise)} seeds for {len(rows)} states: pass one seed per row")
            each = self._client.act_each(
                rows, noise.values, None, prefix, committed, robot_id=self.robot_id, model=self.model
            )
            return self._loop.run_until_complete(each)
        if noise is not None:
            raise ValueError(
                "a server draws its noise from a seed, not an array: pass Seeds([...]) (one per row) or None"
            )
        batch = self._client.act_batch(
            rows, prefix=prefix, committed=committed, robot_id=self.robot_id, model=self.model
        )
        return self._loop.run_until_complete(batch).actions

    def reset(self) -> None:
        """Nothing to forget: every request stands alone."""

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
