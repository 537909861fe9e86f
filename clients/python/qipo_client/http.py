"""`/act` over HTTP, sync (`PolicyClient`) and async (`AsyncPolicyClient`), on httpx.

Both run the operations of `qipo_client._ops`; the classes here only move bytes. Robot semantics:
- every call has a timeout (per client, overridable per call); a controller at 50 Hz passes ~0.015 s;
- `/act` is never retried: a late action is worse than none, and a retry doubles the load exactly when the
  server is slow. `NoAction` (504 deadline, 503 not ready / overloaded / pinned version not on that replica
  yet, timeouts, connection errors) tells the caller to use its own fallback this tick. Only idempotent
  probes (`wait_ready`) poll;
- msgpack by default: float32 states and actions travel as bytes, bit-exact, smaller than JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import httpx
import numpy as np

from qipo_client import _ops
from qipo_client._base import AsyncActs, SyncActs
from qipo_client._ops import Call, Op, Reply, Sleep
from qipo_client.policy import PolicyMetadata

if TYPE_CHECKING:
    pass

T = TypeVar("T")


def _reply(response: httpx.Response) -> Reply:
    return Reply(response.status_code, response.content, response.headers.get("content-type"))


def _failed(exc: httpx.HTTPError) -> Reply:
    if isinstance(exc, httpx.TimeoutException):
        return Reply(0, error=f"no reply within the timeout ({type(exc).__name__})")
    return Reply(0, error=f"server unreachable: {exc}")


def _request(base_url: str, default_timeout: float, call: Call) -> dict[str, Any]:
    return {
        "method": call.method,
        "url": base_url + call.path,
        "content": call.content or None,
        "headers": call.headers,
        "timeout": call.timeout or default_timeout,
    }


class PolicyClient(SyncActs):
    """Blocking client with one keep-alive connection pool; use as a context manager or call `close()`."""

    def __init__(self, base_url: str, timeout: float = 1.0, format: str = "msgpack") -> None:
        super().__init__(format)
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        # retries=0: httpx never re-sends a request on its own (no blind retries of /act).
        self._http = httpx.Client(transport=httpx.HTTPTransport(retries=0), timeout=timeout)

    def _drive(self, op: Op[T]) -> T:
        step = next(op)
        while True:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                reply = _ops.NOTHING
            else:
                try:
                    reply = _reply(self._http.request(**_request(self.base_url, self.timeout, step)))
                except httpx.HTTPError as exc:
                    reply = _failed(exc)
            try:
                step = op.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result

    def models(self) -> dict[str, Any]:
        return self._drive(_ops.models())

    def metadata(self) -> PolicyMetadata:
        return self._drive(_ops.metadata())

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> dict[str, Any]:
        return self._drive(_ops.wait_ready(self.base_url, timeout, interval))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicyClient(AsyncActs):
    """asyncio client: many concurrent `act` calls share one connection pool (same methods, awaited)."""

    def __init__(
        self, base_url: str, timeout: float = 1.0, format: str = "msgpack", max_connections: int = 64
    ) -> None:
        super().__init__(format)
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(retries=0, limits=limits), timeout=timeout
        )

    async def _drive(self, op: Op[T]) -> T:
        step = next(op)
        while True:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                reply = _ops.NOTHING
            else:
                try:
                    reply = _reply(await self._http.request(**_request(self.base_url, self.timeout, step)))
                except httpx.HTTPError as exc:
                    reply = _failed(exc)
            try:
                step = op.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result

    async def act_each(
        self,
        states: np.ndarray,
        seeds: Sequence[int],
        timeout: Optional[float] = None,
        prefixes: Any = None,
        committed: Any = None,
        robot_id: Optional[str] = None,
        model: Optional[str] = None,
    ) -> np.ndarray:
        """One concurrent single-state request per row, each with its own seed (as separate robots
        would send them); the server's micro-batcher joins them. Returns actions [B, A] (chunks
        [B, H, A] from a chunked model). `prefixes` [B, L, A] and `committed` (an int or one per row) go
        with the rows to a chunked model that inpaints."""
        if len(states) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds for {len(states)} states: pass one seed per row")
        d = np.broadcast_to(np.asarray(0 if committed is None else committed), (len(states),))
        replies = await asyncio.gather(
            *(
                self.act(
                    row,
                    seed=int(s),
                    timeout=timeout,
                    robot_id=robot_id,
                    model=model,
                    prefix=None if prefixes is None else prefixes[i],
                    committed=None if prefixes is None or committed is None else int(d[i]),
                )
                for i, (row, s) in enumerate(zip(states, seeds))
            )
        )
        return np.stack([r.actions[0] for r in replies])

    async def models(self) -> dict[str, Any]:
        return await self._drive(_ops.models())

    async def metadata(self) -> PolicyMetadata:
        return await self._drive(_ops.metadata())

    async def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> dict[str, Any]:
        return await self._drive(_ops.wait_ready(self.base_url, timeout, interval))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
