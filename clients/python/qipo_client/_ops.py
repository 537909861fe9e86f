"""Every client operation written once, as a generator that yields what to send and gets the reply back.

The sync and async clients, over HTTP or a websocket, differ only in how they move bytes (`Call` → `Reply`)
and how they wait (`Sleep`); the request bodies, reply checks and polling rules live here alone, so the
four clients cannot disagree on the contract.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Optional, TypedDict, TypeVar, Union

import numpy as np
from pydantic import ValidationError

from qipo_client import codec
from qipo_client.errors import NO_ACTION_STATUSES, NoAction, ServerError
from qipo_client.policy import PolicyMetadata
from qipo_client.wire import ActResponse, Timing

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One request: an HTTP method and path (a websocket sends only `content`)."""

    method: str
    path: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None


@dataclass(frozen=True)
class Sleep:
    """Wait before the next step (only idempotent probes poll)."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """What came back: `status` 0 with `error` set when nothing did (timeout, unreachable)."""

    status: int
    content: bytes = b""
    content_type: Optional[str] = None
    error: Optional[str] = None


Op = Generator[Union[Call, Sleep], Reply, T]
NOTHING = Reply(0)  # what a driver sends back after a Sleep


@dataclass(frozen=True)
class ActReply:
    """A 200 from /act: the validated wire reply with its actions as float32 [B, A], or, from a chunked
    model (action_horizon H > 1), its chunks as float32 [B, H, A]."""

    actions: np.ndarray  # `action` (`chunk`) is row 0 for a single-state call
    response: ActResponse

    @property
    def action_horizon(self) -> int:
        return self.response.action_horizon or 1

    @property
    def action(self) -> np.ndarray:
        """The action [A] of a single-state call; a chunk reply has none (read `chunk`)."""
        if self.actions.ndim != 2:
            raise ValueError(
                f"this reply is a chunk of {self.action_horizon} actions (a chunked model): read `.chunk`"
            )
        row: np.ndarray = self.actions[0]
        return row

    @property
    def chunk(self) -> np.ndarray:
        """The chunk [H, A] of a single-state call to a chunked model."""
        if self.actions.ndim != 3:
            raise ValueError("this reply holds one action per state (action_horizon 1): read `.action`")
        rows: np.ndarray = self.actions[0]
        return rows

    @property
    def control_period_s(self) -> Optional[float]:
        return self.response.control_period_s

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
    def request_id(self) -> Optional[str]:
        return self.response.request_id


class ActFields(TypedDict, total=False):
    """The optional /act fields a client method takes as keywords (typed for callers' checkers)."""

    seed: Optional[int]
    deadline_ms: Optional[float]
    robot_id: Optional[str]
    request_id: Optional[str]
    model: Optional[str]
    prefix: Any  # chunked models: the previous chunk's remaining actions, [L, A] (`states`: [B, L, A])
    committed: Any  # d: how many of them run before the new chunk starts (an int, or one per state)


@dataclass(frozen=True)
class ActOptions:
    """The optional fields of one /act request (see `qipo_client.wire.ActRequest`)."""

    seed: Optional[int] = None
    deadline_ms: Optional[float] = None
    robot_id: Optional[str] = None
    request_id: Optional[str] = None
    model: Optional[str] = None
    prefix: Any = None
    committed: Any = None

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k not in ("prefix", "committed")}


def act_body(state: Any, states: Any, fmt: str, options: ActOptions) -> bytes:
    """The encoded /act body: float32 rows as ndarrays (msgpack) or lists (JSON)."""
    body = options.fields()
    if options.prefix is not None:
        prefix = np.asarray(options.prefix, dtype=np.float32)
        body["prefix" if state is not None else "prefixes"] = (
            prefix if fmt == codec.MSGPACK else prefix.tolist()
        )
    if options.committed is not None:
        committed = np.asarray(options.committed)
        body["committed"] = int(committed) if committed.ndim == 0 else [int(c) for c in committed]
    if state is not None:
        arr = np.asarray(state, dtype=np.float32).reshape(-1)
        body["state"] = arr if fmt == codec.MSGPACK else arr.tolist()
    else:
        rows = np.asarray(states, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"states must be 2-D [batch, obs_dim], got shape {rows.shape}")
        body["states"] = rows if fmt == codec.MSGPACK else rows.tolist()
    return codec.encode(body, fmt)


def act(state: Any, states: Any, fmt: str, options: ActOptions, timeout: Optional[float]) -> Op[ActReply]:
    """One /act exchange; never retried (a late action is worse than none)."""
    content = act_body(state, states, fmt, options)
    reply = yield Call("POST", "/act", content, {"content-type": fmt, "accept": fmt}, timeout)
    return decode_act(reply)


def decode_act(reply: Reply) -> ActReply:
    """Validate a reply against the contract; NoAction / ServerError when it holds no action."""
    data = _decoded(reply)
    # A websocket answers errors in-band as {"status", "detail"}; HTTP by its status line.
    status = int(data.get("status", reply.status)) if isinstance(data, dict) else reply.status
    if status != 200:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        raise (NoAction if status in NO_ACTION_STATUSES else ServerError)(status, detail)
    try:  # msgpack replies carry ndarrays; `decode` made them lists, which float32 holds exactly
        response = ActResponse.model_validate(data)
    except ValidationError as exc:
        raise ServerError(status, f"reply does not match the /act contract: {exc}") from exc
    rows: Any = [response.action] if response.action is not None else response.actions
    if rows is None:
        rows = [response.chunk] if response.chunk is not None else response.chunks
    if rows is None:
        raise ServerError(status, "reply has none of `action`, `actions`, `chunk`, `chunks`")
    return ActReply(actions=np.asarray(rows, dtype=np.float32), response=response)


def _decoded(reply: Reply) -> Any:
    if reply.error is not None:
        raise NoAction(0, reply.error)
    kind = codec.media_type(reply.content_type) or codec.JSON
    try:
        return codec.decode(reply.content, kind) if reply.content else {}
    except codec.CodecError:
        return {"detail": reply.content[:500].decode("utf-8", "replace")}


def models() -> Op[dict[str, Any]]:
    """GET /v1/models: the served model and its manifest."""
    reply = yield Call("GET", "/v1/models")
    data = _decoded(reply)
    if reply.status != 200 or not isinstance(data, dict):
        raise ServerError(reply.status, data)
    return data


def metadata() -> Op[PolicyMetadata]:
    """The served model as `PolicyMetadata` (from /v1/models)."""
    served = yield from models()
    return metadata_from(served)


def metadata_from(served: dict[str, Any]) -> PolicyMetadata:
    manifest = served["manifest"]
    return PolicyMetadata(
        name=str(served.get("name", manifest["name"])),
        version=served.get("version"),
        obs_dim=int(manifest["obs_dim"]),
        act_dim=int(manifest["act_dim"]),
        noise_dim=int(manifest.get("noise_dim") or 0),
        action_low=tuple(float(x) for x in manifest["action_low"]),
        action_high=tuple(float(x) for x in manifest["action_high"]),
        env_id=manifest.get("env_id") or manifest.get("dataset", {}).get("env_id"),
        action_horizon=int(manifest.get("action_horizon") or 1),
        control_period_s=manifest.get("control_period_s"),
        extra={"manifest": manifest},
    )


def wait_ready(base_url: str, timeout: float, interval: float) -> Op[dict[str, Any]]:
    """Poll GET /readyz (idempotent, safe to repeat) until a model is loaded."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        reply = yield Call("GET", "/readyz", timeout=min(interval * 5, timeout))
        try:
            last = _decoded(reply)
        except NoAction as exc:
            last = str(exc)
        if reply.status == 200 and isinstance(last, dict):
            return last
        yield Sleep(interval)
    raise NoAction(503, f"server at {base_url} not ready after {timeout:g} s: {last}")
