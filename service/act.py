"""`POST /act` and `WS /act/ws`: decode, validate, pick the model, hand the rows to the micro-batcher, answer.

Transport only: the model comes from `ModelManager`, the batching and the deadline guard from `MicroBatcher`.
Which model answers a request is one replaceable function, `ActService.pick_model`, so canary routing by
`robot_id` plugs in without touching this module.

The hot path stays in arrays. The body is parsed once (orjson, or msgpack whose ndarrays stay ndarrays) and
the states become one float32 ndarray whose shape and finiteness NumPy checks; no pydantic model is built.
Anything the fast checks do not accept as it stands (a wrong type, a missing field, a bad number) goes
through the wire model `ActRequest` and `checked_rows`, which give the 422's exact field, row and reason,
and accept what pydantic's lax mode coerces, so both paths answer every body the same way.

`ActRoute` serves `POST /act` as a plain ASGI app bound to its app's `ActService`: FastAPI still reads the
endpoint's signature, `ACT_OPENAPI` and `ActResponse` for the OpenAPI schema, but a request skips the
per-request dependency solving and Request/Response objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from annotated_types import Ge, Gt, Lt, MaxLen
from fastapi import Request, Response, WebSocket, WebSocketDisconnect, status
from fastapi.routing import APIRoute, APIWebSocketRoute
from pydantic import ValidationError
from qipo_client.wire import ActRequest, ActResponse
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from service import codec
from service.batcher import BatchError, MicroBatcher
from service.chunks import F32_MAX, PrefixError, prefix_inputs
from service.metrics import Metrics
from service.models import LoadedModel, ModelManager, ModelNotLoaded
from service.settings import ServeSettings

log = logging.getLogger(__name__)

# (robot_id, model) -> the model that answers; raises ActError (409 / 503) when there is none.
ModelPicker = Callable[[str | None, str | None], LoadedModel]


class ActError(Exception):
    """A request answered without an action: HTTP status, FastAPI-shaped detail, optional headers."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers
        self.context: dict[str, Any] = {}  # model, version, timing, request_id once they are known


def unprocessable(field: str | list[str | int], msg: str) -> ActError:
    """A 422 in FastAPI's own shape, naming the field and what to do."""
    loc = [field] if isinstance(field, str) else field
    return ActError(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]
    )


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def checked_rows(body: ActRequest, obs_dim: int, max_rows: int) -> list[list[float]]:
    """The states as rows of obs_dim finite float32-representable numbers, or a 422 naming the culprit."""
    field = "state" if body.state is not None else "states"
    rows = [body.state] if body.state is not None else body.states
    assert rows is not None
    if len(rows) > max_rows:
        raise unprocessable(field, f"{len(rows)} states is over max_batch_rows={max_rows}; split the batch")
    for i, row in enumerate(rows):
        loc: list[str | int] = [field] if field == "state" else [field, i]
        where = field if field == "state" else f"states[{i}]"
        if len(row) != obs_dim:
            raise unprocessable(loc, f"{where} has {len(row)} values; this model needs obs_dim={obs_dim}")
        for x in row:
            if not -F32_MAX <= x <= F32_MAX:  # False for NaN as well
                raise unprocessable(
                    loc, f"{where} contains NaN or Inf (or overflows float32): {x!r}; send finite numbers"
                )
    return rows


# ----- fast path: plain checks that accept a subset of what ActRequest accepts, with the same result ---
def _constraint(name: str, kind: type, attr: str) -> Any:
    """One bound of an ActRequest field (max_length, ge, lt, gt), read from the wire model itself."""
    return next(getattr(m, attr) for m in ActRequest.model_fields[name].metadata if isinstance(m, kind))


_FIELDS = frozenset(ActRequest.model_fields)
_TEXT_FIELDS = tuple(
    (name, _constraint(name, MaxLen, "max_length")) for name in ("robot_id", "model", "request_id")
)
_SEED_MIN, _SEED_END = _constraint("seed", Ge, "ge"), _constraint("seed", Lt, "lt")
_DEADLINE_GT = _constraint("deadline_ms", Gt, "gt")
_EXACT_INT = 2**53  # ints up to here become floats exactly, as pydantic's float(x) makes them


@dataclass(slots=True)
class ActInput:
    """A request as the hot path holds it: the states as one array, the rest as plain values."""

    rows: np.ndarray  # numeric [n, obs_dim] or [obs_dim] before `states_for`, float32 [n, obs_dim] after
    single: bool  # `state` (one observation) rather than `states`
    checked: bool  # rows are float32 [1, n] already, every value in float32's range (`_small_state`)
    seed: int | None
    deadline_ms: float | None
    robot_id: str | None
    model: str | None
    request_id: str | None
    prefix: Any = None  # `prefix` / `prefixes` as the body held it (checked by `service.chunks`)
    committed: Any = None


def fast_input(obj: Any) -> ActInput | None:
    """The request without pydantic, or None when anything is not plainly valid (the slow path decides)."""
    if type(obj) is not dict or not obj.keys() <= _FIELDS:
        return None
    state, states = obj.get("state"), obj.get("states")
    if (state is None) == (states is None):
        return None
    seed = obj.get("seed")
    if seed is not None and (type(seed) is not int or not _SEED_MIN <= seed < _SEED_END):
        return None
    deadline = obj.get("deadline_ms")
    if deadline is not None:
        if type(deadline) is int and -_EXACT_INT <= deadline <= _EXACT_INT:
            deadline = float(deadline)
        if type(deadline) is not float or not deadline > _DEADLINE_GT:
            return None
    for name, max_length in _TEXT_FIELDS:
        value = obj.get(name)
        if value is not None and (type(value) is not str or len(value) > max_length):
            return None
    single = state is not None
    rows = _small_state(state) if single else None
    checked = rows is not None
    if rows is None:
        rows = _numeric(state if single else states)
        if rows is None or rows.ndim != (1 if single else 2) or len(rows) == 0:
            return None
    inp = ActInput(
        rows, single, checked, seed, deadline, obj.get("robot_id"), obj.get("model"), obj.get("request_id")
    )
    return inp if _fast_prefix(obj, inp) else None


def _fast_prefix(obj: dict[str, Any], inp: ActInput) -> bool:
    """Take `prefix` / `prefixes` and `committed` when plainly typed (numbers, ints); False sends the body
    to the slow path, which names what is wrong."""
    prefix, prefixes, committed = obj.get("prefix"), obj.get("prefixes"), obj.get("committed")
    if prefix is None and prefixes is None and committed is None:
        return True
    raw = prefix if inp.single else prefixes
    if (prefixes if inp.single else prefix) is not None or raw is None:
        return False
    if not (type(raw) is list and len(raw) == 0):
        raw = _numeric(raw)
        if raw is None:
            return False
    if committed is not None and not (
        type(committed) is int or (type(committed) is list and all(type(c) is int for c in committed))
    ):
        return False
    inp.prefix, inp.committed = raw, committed
    return True


_SMALL_STATE = 64  # up to this many values, Python checks a JSON state faster than NumPy's reductions


def _small_state(value: Any) -> np.ndarray | None:
    """A short JSON `state` of plain floats as float32 [1, n], its range checked in Python, where the
    NumPy calls (array, two reductions, cast) cost more than the work; None for anything else (ints,
    msgpack arrays, long states take the general path, which gives the same answer)."""
    if type(value) is not list or not 0 < len(value) <= _SMALL_STATE:
        return None
    for x in value:
        if type(x) is not float or not -F32_MAX <= x <= F32_MAX:  # False for NaN as well
            return None
    return np.array([value], dtype=np.float32)


def _numeric(value: Any) -> np.ndarray | None:
    """A JSON list or msgpack ndarray of ints/floats as an ndarray (None for anything else: strings, bools,
    None entries, ragged rows, big ints, which pydantic judges)."""
    if type(value) is list:
        try:
            arr = np.array(value)
        except (ValueError, TypeError, OverflowError):
            return None
    elif type(value) is np.ndarray:
        arr = value
    else:
        return None
    if arr.dtype == np.float64 or arr.dtype == np.float32:
        return arr
    if arr.dtype.kind in "iuf" and arr.dtype.itemsize <= 8:
        return arr.astype(np.float64)  # as pydantic (int → Python float), and ±F32_MAX stays comparable
    return None


def _validated(obj: Any) -> ActRequest:
    """The slow path: the wire model judges the body (exact 422s, lax coercions)."""
    if not isinstance(obj, dict):
        raise unprocessable([], f"body must be an object with `state` or `states`, got {type(obj).__name__}")
    try:
        return ActRequest.model_validate(codec.to_plain(obj))
    except ValidationError as exc:
        raise ActError(status.HTTP_422_UNPROCESSABLE_CONTENT, validation_detail(exc)) from None


def states_for(inp: ActInput, obs_dim: int, max_rows: int) -> bool:
    """Shape, batch size and float32 range of the rows; on success `inp.rows` becomes float32 [n, obs_dim]."""
    rows = inp.rows
    if rows.shape[-1] != obs_dim or (not inp.single and len(rows) > max_rows):
        return False
    if inp.checked:
        return True
    # max/min propagate NaN, and the comparison is False for it: one test for NaN, ±Inf and overflow.
    if not (np.maximum.reduce(rows, axis=None) <= F32_MAX and np.minimum.reduce(rows, axis=None) >= -F32_MAX):
        return False
    rows = rows.astype(np.float32, copy=False)
    inp.rows = rows.reshape(1, obs_dim) if inp.single else rows
    return True


@dataclass
class ActService:
    """Everything `/act` needs, built once per app (`deps.Services.act`)."""

    settings: ServeSettings
    metrics: Metrics
    manager: ModelManager
    batcher: MicroBatcher
    pick_model: ModelPicker

    def count(self, status: int, started: float) -> None:
        self.metrics.count(status, time.perf_counter() - started)

    async def act(self, obj: Any, started: float, request_id: str | None = None) -> dict[str, Any]:
        """One decoded request → the reply dict; raises ActError for every answer without an action."""
        inp = fast_input(obj)
        body = _validated(obj) if inp is None else None
        fields = inp if inp is not None else body
        assert fields is not None
        model = self.pick_model(fields.robot_id, fields.model)
        rid = fields.request_id if fields.request_id is not None else request_id
        policy = model.policy
        meta = policy.metadata
        try:
            inp = self._input(obj, inp, body, meta.obs_dim)
            try:
                prefix = prefix_inputs(inp.prefix, inp.committed, inp.single, len(inp.rows), meta)
            except PrefixError as exc:
                raise unprocessable(exc.field, exc.msg) from None
            deadline = None if inp.deadline_ms is None else started + inp.deadline_ms / 1e3
            try:
                result = await self.batcher.submit(policy, inp.rows, inp.seed, deadline, prefix)
            except BatchError as exc:
                headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
                raise ActError(exc.status, exc.detail, headers) from None
        except ActError as exc:  # a refusal still says which model refused, when and for which request
            exc.context = {
                "model": model.name,
                "version": model.version,
                "timing": {"total_ms": (time.perf_counter() - started) * 1e3},
                "request_id": rid,
            }
            raise
        done = time.perf_counter()
        reply: dict[str, Any] = {
            "model": model.name,
            "version": model.version,
            "clipped": bool(np.count_nonzero(result.saturated)),
            "timing": {
                "queue_ms": result.queue_s * 1e3,
                "infer_ms": result.infer_s * 1e3,
                "total_ms": (done - started) * 1e3,
            },
            "request_id": rid,
        }
        one, many = ("action", "actions") if meta.action_horizon == 1 else ("chunk", "chunks")
        if inp.single:
            reply[one] = result.actions[0]
        else:
            reply[many] = result.actions
        if meta.action_horizon > 1:  # H = 1 replies stay as they were, byte for byte
            reply["action_horizon"] = meta.action_horizon
            reply["control_period_s"] = meta.control_period_s
        return reply

    def _input(self, obj: Any, inp: ActInput | None, body: ActRequest | None, obs_dim: int) -> ActInput:
        """The request's states as float32 [n, obs_dim]: the fast path's when it holds, else the slow
        path's, which names the field, row and reason (and takes what the fast one could not)."""
        if inp is not None and states_for(inp, obs_dim, self.settings.max_batch_rows):
            return inp
        body = body or _validated(obj)
        rows = checked_rows(body, obs_dim, self.settings.max_batch_rows)
        single = body.state is not None
        return ActInput(
            np.array(rows, dtype=np.float32),
            single,
            True,
            body.seed,
            body.deadline_ms,
            body.robot_id,
            body.model,
            body.request_id,
            body.prefix if single else body.prefixes,
            body.committed,
        )

    async def respond(
        self, body: bytes, content_type: bytes | None, accept: bytes | None, request_id: str | None
    ) -> tuple[int, bytes, str, dict[str, str] | None]:
        """One HTTP /act exchange: (status, payload, media type, extra headers)."""
        started = time.perf_counter()
        kind = codec.media_type_of(content_type)
        try:
            if kind not in codec.MEDIA_TYPES:
                raise ActError(
                    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type {kind!r} is not accepted; send application/json or application/msgpack",
                )
            try:
                obj = codec.loads_json(body) if kind == codec.JSON else codec.unpackb(body)
            except codec.CodecError as exc:
                raise unprocessable([], str(exc)) from None
            reply = await self.act(obj, started, request_id)
        except ActError as exc:
            self.count(exc.status, started)
            return exc.status, codec.encode(_error_body(exc), codec.JSON), codec.JSON, exc.headers
        self.count(status.HTTP_200_OK, started)
        reply_kind = (
            codec.MSGPACK
            if kind == codec.MSGPACK or (accept is not None and _MSGPACK_BYTES in accept)
            else codec.JSON
        )
        return status.HTTP_200_OK, codec.encode(reply, reply_kind), reply_kind, None

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /act` as a plain ASGI app: one pass over the headers, the body, one reply."""
        content_type = accept = request_id = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = content_type or value
            elif key == b"accept":
                accept = accept or value
            elif key == b"x-request-id" and request_id is None:
                request_id = value.decode("latin-1")
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status, payload, media, extra = await self.respond(body, content_type, accept, request_id)
        headers = [(b"content-type", _MEDIA_BYTES[media]), (b"content-length", str(len(payload)).encode())]
        if extra:
            headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


_MSGPACK_BYTES = codec.MSGPACK.encode()
_MEDIA_BYTES = {kind: kind.encode() for kind in codec.MEDIA_TYPES}


def _error_body(exc: ActError) -> dict[str, Any]:
    return {"detail": exc.detail, **exc.context}


def pick_served(manager: ModelManager) -> ModelPicker:
    """Default routing (`ModelManager.choose`): `model` pins an alias or version this replica has loaded,
    else a canary share by `robot_id` (sticky), else the current model."""

    def pick(robot_id: str | None, ref: str | None) -> LoadedModel:
        try:
            model = manager.choose(robot_id, ref)
        except ModelNotLoaded as exc:
            if exc.not_yet:  # a rolling upgrade's lag: the balancer retries on another replica
                raise ActError(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), {"Retry-After": "1"}) from None
            raise ActError(status.HTTP_409_CONFLICT, str(exc)) from None
        if model is None:
            raise ActError(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"no model loaded: {manager.last_error or 'loading'}",
                {"Retry-After": "1"},
            )
        return model

    return pick


# The body FastAPI cannot infer (the handler reads it itself): documented for clients and schemathesis.
ACT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or the same map as `application/msgpack` (arrays may be numpy-codec ndarrays).",
        "content": {"application/json": {"schema": ActRequest.model_json_schema()}},
    }
}
ACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_409_CONFLICT: {
        "description": "`model` names an alias or older version this replica does not hold"
    },
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": "Body larger than max_body_bytes"},
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: {
        "description": "Content-Type is neither application/json nor application/msgpack"
    },
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "description": "Invalid request: the detail names the field and why"
    },
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "description": "No model ready, queue full, shutting down, or `model` pins a version newer than "
        "this replica holds yet (see Retry-After)"
    },
    status.HTTP_504_GATEWAY_TIMEOUT: {
        "description": "deadline_ms cannot be met: no action is sent, use the robot's fallback"
    },
}


class ActRoute(APIRoute):
    """`POST /act`: documented by FastAPI from `endpoint`, answered by `service.asgi` directly."""

    def __init__(self, service: ActService) -> None:
        async def act(request: Request) -> Response:
            """The operation FastAPI documents; the same exchange as `ActService.asgi`, through a Request."""
            headers = request.headers
            status, payload, media, extra = await service.respond(
                await request.body(),
                headers.get("content-type", "").encode("latin-1") or None,
                headers.get("accept", "").encode("latin-1") or None,
                headers.get("x-request-id"),
            )
            return Response(payload, status, extra, media)

        super().__init__(
            "/act",
            act,
            methods=["POST"],
            response_model=ActResponse,
            responses=ACT_RESPONSES,
            openapi_extra=ACT_OPENAPI,
            summary="One action (state) or a batch (states) from the served policy",
        )
        self.app = service.asgi


def act_routes(service: ActService) -> list[BaseRoute]:
    """`POST /act` and `WS /act/ws`, bound to one app's service."""

    async def act_ws(websocket: WebSocket) -> None:
        """A controller streams states and gets one reply per message, in the message's encoding (text:
        JSON, binary: msgpack). Errors come back as `{"status", "detail"}` and the connection stays open."""
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                started = time.perf_counter()
                data: bytes | None = message.get("bytes")
                kind = codec.MSGPACK if data is not None else codec.JSON
                if data is None:
                    data = (message.get("text") or "").encode()
                try:
                    if len(data) > service.settings.max_body_bytes:
                        raise ActError(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            f"message of {len(data)} bytes is over max_body_bytes",
                        )
                    try:
                        obj = codec.unpackb(data) if kind == codec.MSGPACK else codec.loads_json(data)
                    except codec.CodecError as exc:
                        raise unprocessable([], str(exc)) from None
                    reply = await service.act(obj, started)
                    service.count(status.HTTP_200_OK, started)
                except ActError as exc:
                    service.count(exc.status, started)
                    reply = {"status": exc.status, **_error_body(exc)}
                payload = codec.encode(reply, kind)
                if kind == codec.MSGPACK:
                    await websocket.send_bytes(payload)
                else:
                    await websocket.send_text(payload.decode())
        except WebSocketDisconnect:
            return

    return [ActRoute(service), APIWebSocketRoute("/act/ws", act_ws)]
