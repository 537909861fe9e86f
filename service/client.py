"""A small client for `/act`, sync (`PolicyClient`) and async (`AsyncPolicyClient`).

Imports httpx, numpy, msgpack and the wire models only — never fastapi or onnxruntime — so a robot
controller can install it alone.

Robot semantics:
- every call has a timeout (per client, overridable per call); a controller at 50 Hz should pass ~15 ms;
- `/act` is never retried: a late action is worse than none, and a retry would double the load exactly when
  the server is slow. `NoAction` (504 deadline, 503 not ready / overloaded / pinned version not on that
  replica yet, timeouts, connection errors) tells the caller to use its own fallback this tick. Only
  idempotent probes (`wait_ready`) poll;
- msgpack by default: float32 states and actions travel as bytes, bit-exact, smaller than JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import ValidationError

from service import codec
from service.wire import ActResponse, Timing

Format = Literal["json", "msgpack"]
ArrayLike = Sequence[float] | np.ndarray


class ServerError(RuntimeError):
    """The server answered without an action; `status` and `detail` say why."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))
        self.status = status
        self.detail = detail


class NoAction(ServerError):
    """No action this tick (deadline, overload, not ready, timeout, unreachable): use the fallback."""


@dataclass(frozen=True)
class ActReply:
    """A 200 from /act: the wire reply (`service.wire.ActResponse`, validated) with its actions as float32."""

    actions: np.ndarray  # [B, A] float32; `action` is row 0 for a single-state call
    response: ActResponse

    @property
    def action(self) -> np.ndarray:
        return self.actions[0]

    @property
    def model(self) -> str:
        return self.response.model

    @property
    def version(self) -> int:
        return self.response.version

    @property
    def clipped(self) -> bool:
        return self.response.clipped

    @property
    def timing(self) -> Timing:
        return self.response.timing

    @property
    def request_id(self) -> str | None:
        return self.response.request_id


def _body(
    state: ArrayLike | None,
    states: ArrayLike | Sequence[ArrayLike] | None,
    fmt: Format,
    **fields: Any,
) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None}
    if state is not None:
        arr = np.asarray(state, dtype=np.float32).reshape(-1)
        body["state"] = arr if fmt == "msgpack" else arr.tolist()
    else:
        arr2 = np.asarray(states, dtype=np.float32)
        if arr2.ndim != 2:
            raise ValueError(f"states must be 2-D [batch, obs_dim], got shape {arr2.shape}")
        body["states"] = arr2 if fmt == "msgpack" else arr2.tolist()
    return body


def _encode(body: dict[str, Any], fmt: Format) -> tuple[bytes, dict[str, str]]:
    kind = codec.MSGPACK if fmt == "msgpack" else codec.JSON
    return codec.encode(body, kind), {"content-type": kind, "accept": kind}


def _decode_reply(response: httpx.Response) -> ActReply:
    kind = codec.media_type(response.headers.get("content-type")) or codec.JSON
    try:
        data = codec.decode(response.content, kind) if response.content else {}
    except codec.CodecError:
        data = {"detail": response.text[:500]}
    if response.status_code != 200:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        error = NoAction if response.status_code in (502, 503, 504) else ServerError
        raise error(response.status_code, detail)
    try:  # msgpack replies carry ndarrays; `decode` made them lists, which float32 holds exactly
        reply = ActResponse.model_validate(data)
    except ValidationError as exc:
        raise ServerError(response.status_code, f"reply does not match the /act contract: {exc}") from exc
    rows = [reply.action] if reply.action is not None else reply.actions
    if rows is None:
        raise ServerError(response.status_code, "reply has neither `action` nor `actions`")
    return ActReply(actions=np.asarray(rows, dtype=np.float32), response=reply)


def _transport_error(exc: httpx.HTTPError) -> NoAction:
    if isinstance(exc, httpx.TimeoutException):
        return NoAction(0, f"no reply within the timeout ({type(exc).__name__})")
    return NoAction(0, f"server unreachable: {exc}")


class _Base:
    def __init__(self, base_url: str, timeout: float, fmt: Format) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.format: Format = fmt

    def _request(
        self,
        state: ArrayLike | None,
        states: ArrayLike | Sequence[ArrayLike] | None,
        seed: int | None,
        deadline_ms: float | None,
        robot_id: str | None,
        request_id: str | None,
        model: str | None,
    ) -> tuple[bytes, dict[str, str]]:
        body = _body(
            state,
            states,
            self.format,
            seed=seed,
            deadline_ms=deadline_ms,
            robot_id=robot_id,
            request_id=request_id,
            model=model,
        )
        return _encode(body, self.format)


class PolicyClient(_Base):
    """Blocking client; one keep-alive connection pool. Use as a context manager or call `close()`."""

    def __init__(self, base_url: str, timeout: float = 1.0, format: Format = "msgpack") -> None:
        super().__init__(base_url, timeout, format)
        # retries=0: httpx never re-sends a request on its own (no blind retries of /act).
        self._http = httpx.Client(transport=httpx.HTTPTransport(retries=0), timeout=timeout)

    def act(
        self,
        state: ArrayLike,
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        robot_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ActReply:
        """One action for one state; raises NoAction / ServerError when there is none."""
        content, headers = self._request(state, None, seed, deadline_ms, robot_id, request_id, model)
        return self._post(content, headers, timeout)

    def act_batch(
        self,
        states: ArrayLike | Sequence[ArrayLike],
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        robot_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ActReply:
        content, headers = self._request(None, states, seed, deadline_ms, robot_id, request_id, model)
        return self._post(content, headers, timeout)

    def _post(self, content: bytes, headers: dict[str, str], timeout: float | None) -> ActReply:
        try:
            response = self._http.post(
                f"{self.base_url}/act", content=content, headers=headers, timeout=timeout or self.timeout
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        return _decode_reply(response)

    def models(self) -> dict[str, Any]:
        response = self._http.get(f"{self.base_url}/v1/models")
        if response.status_code != 200:
            raise ServerError(response.status_code, response.text[:500])
        return dict(response.json())

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll GET /readyz (idempotent, safe to repeat) until a model is loaded."""
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            try:
                response = self._http.get(f"{self.base_url}/readyz", timeout=min(interval * 5, timeout))
                last = response.json()
                if response.status_code == 200:
                    return dict(last)
            except (httpx.HTTPError, ValueError) as exc:
                last = str(exc)
            time.sleep(interval)
        raise NoAction(503, f"server at {self.base_url} not ready after {timeout:g} s: {last}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicyClient(_Base):
    """asyncio client; many concurrent `act` calls share one connection pool."""

    def __init__(
        self, base_url: str, timeout: float = 1.0, format: Format = "msgpack", max_connections: int = 64
    ) -> None:
        super().__init__(base_url, timeout, format)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(retries=0, limits=limits), timeout=timeout
        )

    async def act(
        self,
        state: ArrayLike,
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        robot_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ActReply:
        content, headers = self._request(state, None, seed, deadline_ms, robot_id, request_id, model)
        return await self._post(content, headers, timeout)

    async def act_batch(
        self,
        states: ArrayLike | Sequence[ArrayLike],
        *,
        seed: int | None = None,
        deadline_ms: float | None = None,
        robot_id: str | None = None,
        request_id: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> ActReply:
        content, headers = self._request(None, states, seed, deadline_ms, robot_id, request_id, model)
        return await self._post(content, headers, timeout)

    async def act_each(
        self, states: np.ndarray, seeds: Sequence[int], timeout: float | None = None
    ) -> np.ndarray:
        """One concurrent single-state request per row, each with its own seed (as separate robots
        would send them); the server's micro-batcher joins them. Returns actions [B, A]."""
        replies = await asyncio.gather(
            *(self.act(row, seed=int(s), timeout=timeout) for row, s in zip(states, seeds, strict=True))
        )
        return np.stack([r.action for r in replies])

    async def _post(self, content: bytes, headers: dict[str, str], timeout: float | None) -> ActReply:
        try:
            response = await self._http.post(
                f"{self.base_url}/act", content=content, headers=headers, timeout=timeout or self.timeout
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
        return _decode_reply(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SeededActor:
    """Sync adapter for closed-loop evaluation: `actor(states [B,S], seeds [B]) -> actions [B,A]`, one
    request per row with its own seed, sent concurrently. Owns an event loop; call `close()`."""

    def __init__(self, base_url: str, timeout: float = 10.0, format: Format = "msgpack") -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncPolicyClient(base_url, timeout, format)

    def __call__(self, states: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        return self._runner.run(self._client.act_each(states, seeds))

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()
