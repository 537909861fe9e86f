"""`POST /act` and `WS /act/ws`: decode, validate, pick the model, hand the rows to the micro-batcher, answer.

Transport only (openpi style): the model comes from `ModelManager`, the batching and the deadline guard from
`MicroBatcher`. Which model answers a request is one replaceable function, `ActService.pick_model`, so
canary routing by `robot_id` plugs in without touching this module.

The body is read and decoded by hand rather than by FastAPI's body parsing: it lets one route take JSON and
msgpack, answer 415 for anything else, and keeps the per-request overhead small (the OpenAPI schema still
documents the JSON body, see `ACT_OPENAPI`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from service import codec
from service.batcher import BatchError, MicroBatcher
from service.metrics import Metrics
from service.models import LoadedModel, ModelManager, ModelNotLoaded
from service.settings import ServeSettings
from service.wire import ActRequest, ActResponse

log = logging.getLogger(__name__)

F32_MAX = 3.4028234663852886e38
ModelPicker = Callable[[ActRequest], LoadedModel]


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
    return ActError(422, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


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


@dataclass
class ActService:
    """Everything `/act` needs, built once per app (stored as `app.state.act`)."""

    settings: ServeSettings
    metrics: Metrics
    manager: ModelManager
    batcher: MicroBatcher
    pick_model: ModelPicker

    def __post_init__(self) -> None:
        self._status = {
            s: self.metrics.requests.labels(status=str(s)) for s in (200, 413, 415, 422, 503, 504)
        }

    def count(self, status: int, started: float) -> None:
        counter = self._status.get(status) or self.metrics.requests.labels(status=str(status))
        counter.inc()
        self.metrics.latency.observe(time.perf_counter() - started)

    async def act(self, obj: Any, started: float, request_id: str | None = None) -> dict[str, Any]:
        """One decoded request → the reply dict; raises ActError for every answer without an action."""
        if not isinstance(obj, dict):
            raise unprocessable(
                [], f"body must be an object with `state` or `states`, got {type(obj).__name__}"
            )
        try:
            body = ActRequest.model_validate(obj)
        except ValidationError as exc:
            raise ActError(422, validation_detail(exc)) from None
        model = self.pick_model(body)
        policy = model.policy
        try:
            rows = checked_rows(body, policy.obs_dim, self.settings.max_batch_rows)
            deadline = None if body.deadline_ms is None else started + body.deadline_ms / 1e3
            try:
                result = await self.batcher.submit(policy, rows, body.seed, deadline)
            except BatchError as exc:
                headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
                raise ActError(exc.status, exc.detail, headers) from None
        except ActError as exc:  # a refusal still says which model refused, when and for which request
            exc.context = {
                "model": model.name,
                "version": model.version,
                "timing": {"total_ms": (time.perf_counter() - started) * 1e3},
                "request_id": body.request_id if body.request_id is not None else request_id,
            }
            raise
        done = time.perf_counter()
        reply: dict[str, Any] = {
            "model": model.name,
            "version": model.version,
            "clipped": bool(result.saturated.any()),
            "timing": {
                "queue_ms": result.queue_s * 1e3,
                "infer_ms": result.infer_s * 1e3,
                "total_ms": (done - started) * 1e3,
            },
            "request_id": body.request_id if body.request_id is not None else request_id,
        }
        if body.state is not None:
            reply["action"] = result.actions[0]
        else:
            reply["actions"] = result.actions
        return reply


def pick_served(manager: ModelManager) -> ModelPicker:
    """Default routing (`ModelManager.choose`): `model` pins an alias or version this replica has loaded,
    else a canary share by `robot_id` (sticky), else the current model."""

    def pick(body: ActRequest) -> LoadedModel:
        try:
            model = manager.choose(body.robot_id, body.model)
        except ModelNotLoaded as exc:
            raise ActError(409, str(exc)) from None
        if model is None:
            raise ActError(503, f"no model loaded: {manager.last_error or 'loading'}", {"Retry-After": "1"})
        return model

    return pick


def _error_body(exc: ActError) -> dict[str, Any]:
    return {"detail": exc.detail, **exc.context}


# The body FastAPI cannot infer (the handler reads it itself): documented for clients and schemathesis.
ACT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or the same map as `application/msgpack` (arrays may be numpy-codec ndarrays).",
        "content": {"application/json": {"schema": ActRequest.model_json_schema()}},
    }
}
ACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "`model` names an alias or version this replica has not loaded"},
    413: {"description": "Body larger than max_body_bytes"},
    415: {"description": "Content-Type is neither application/json nor application/msgpack"},
    422: {"description": "Invalid request: the detail names the field and why"},
    503: {"description": "No model ready, queue full or shutting down (see Retry-After)"},
    504: {"description": "deadline_ms cannot be met: no action is sent, use the robot's fallback"},
}

router = APIRouter()


@router.post(
    "/act",
    response_model=ActResponse,
    responses=ACT_RESPONSES,
    openapi_extra=ACT_OPENAPI,
    summary="One action (state) or a batch (states) from the served policy",
)
async def act(request: Request) -> Response:
    started = time.perf_counter()
    service: ActService = request.app.state.act
    headers = request.headers
    kind = codec.media_type(headers.get("content-type")) or codec.JSON
    reply_kind = (
        codec.MSGPACK if kind == codec.MSGPACK or codec.MSGPACK in headers.get("accept", "") else codec.JSON
    )
    try:
        if kind not in codec.MEDIA_TYPES:
            raise ActError(
                415, f"Content-Type {kind!r} is not accepted; send application/json or application/msgpack"
            )
        try:
            obj = codec.decode(await request.body(), kind)
        except codec.CodecError as exc:
            raise unprocessable([], str(exc)) from None
        reply = await service.act(obj, started, headers.get("x-request-id"))
    except ActError as exc:
        service.count(exc.status, started)
        return Response(codec.encode(_error_body(exc), codec.JSON), exc.status, exc.headers, codec.JSON)
    service.count(200, started)
    return Response(codec.encode(reply, reply_kind), 200, media_type=reply_kind)


@router.websocket("/act/ws")
async def act_ws(websocket: WebSocket) -> None:
    """A controller streams states and gets one reply per message, in the message's encoding (text: JSON,
    binary: msgpack). Errors come back as `{"status", "detail"}` and the connection stays open."""
    service: ActService = websocket.app.state.act
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
                    raise ActError(413, f"message of {len(data)} bytes is over max_body_bytes")
                try:
                    obj = codec.decode(data, kind)
                except codec.CodecError as exc:
                    raise unprocessable([], str(exc)) from None
                reply = await service.act(obj, started)
                service.count(200, started)
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
