"""FastAPI app factory (docs/architecture.md). `ModelManager` builds the model, injected; the routers only
validate, time and answer. Extra routers (admin, hot reload) attach with `app.include_router` and reach the
shared objects through `app.state` (`settings`, `metrics`, `manager`, `batcher`, `act`)."""

from __future__ import annotations

import copy
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.act import ActService, pick_served
from service.act import router as act_router
from service.admin import router as admin_router
from service.batcher import BatchConfig, Executor, MicroBatcher
from service.follower import Follower, load_at_startup
from service.metrics import Metrics
from service.models import ModelManager, ModelNotLoaded
from service.registry import open_registry
from service.settings import ServeSettings

log = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """413 for a body over the limit: at once when Content-Length says so, else while it streams in.

    Pure ASGI (no BaseHTTPMiddleware): it costs nothing on the hot path.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._reject(send, f"body of {int(value)} bytes")
                    return
                # The HTTP parser never delivers more than Content-Length bytes: nothing left to watch.
                await self.app(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, "streamed body")

    async def _reject(self, send: Send, what: str) -> None:
        body = orjson.dumps(
            {"detail": f"{what} is over the {self.max_bytes}-byte limit (max_body_bytes); send fewer states"}
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


probes = APIRouter()


@probes.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get("/readyz", summary="A verified model is loaded (503 with the reason if not)")
async def readyz(request: Request) -> Response:
    manager: ModelManager = request.app.state.manager
    follower: Follower = request.app.state.follower
    body = {**manager.status(), "registry": follower.status()}  # serving a verified model = ready
    return Response(orjson.dumps(body), 200 if body["ready"] else 503, media_type="application/json")


@probes.get("/v1/models", summary="The loaded model and its manifest")
async def models(request: Request) -> dict[str, Any]:
    manager: ModelManager = request.app.state.manager
    try:
        model = manager.choose()
    except ModelNotLoaded as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    if model is None:
        raise HTTPException(
            503, detail=f"no model loaded: {manager.last_error or 'loading'}", headers={"Retry-After": "1"}
        )
    return {
        "name": model.name,
        "version": model.version,
        "manifest": model.policy.manifest.model_dump(mode="json"),
    }


@probes.get("/metrics", summary="Prometheus metrics")
async def prometheus(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings.model_validate({})  # env + .env; model_validate keeps mypy quiet
    metrics = Metrics()
    registry = open_registry(settings.registry, settings.registry_prefix)
    manager = ModelManager(settings, registry, metrics)
    follower = Follower(manager, registry, metrics, settings.registry_poll_seconds)
    batcher = MicroBatcher(
        BatchConfig(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            queue_timeout_ms=settings.queue_timeout_ms,
            max_queue_rows=settings.max_queue_rows,
            executor=cast(Executor, settings.batch_executor),
        ),
        metrics,
        seed=settings.seed,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await load_at_startup(manager, follower, settings)  # never raises: /readyz says why if no model
        if settings.gc_freeze:
            # Start-up objects (modules, sessions, the app) never die: keep them out of every GC pass.
            gc.collect()
            gc.freeze()
        yield
        follower.stop()
        drained = await batcher.drain(settings.drain_timeout_s)
        registry.close()
        log.info("shut down", extra={"drained": drained})

    app = FastAPI(title="QIPO policy server", version=__version__, lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.manager = manager
    app.state.batcher = batcher
    app.state.follower = follower
    app.state.act = ActService(settings, metrics, manager, batcher, pick_served(manager))
    # Routes go straight onto the app (FastAPI ≥0.165 would nest an included router as one opaque entry,
    # hiding its paths from `app.routes`); /act first, since routes are matched in order.
    for router in (act_router, probes):
        app.router.routes.extend(router.routes)
    app.include_router(admin_router)
    app.openapi = lambda: openapi_with_dims(app, manager)  # type: ignore[method-assign]
    return app


def openapi_with_dims(app: FastAPI, manager: ModelManager) -> dict[str, Any]:
    """The OpenAPI schema with `state` pinned to the served model's obs_dim, so clients (and schemathesis)
    see the exact shape; rebuilt per call because a hot reload may change the model."""
    schema = copy.deepcopy(FastAPI.openapi(app))
    model = manager.current
    if model is None:
        return schema
    dim = {"minItems": model.policy.obs_dim, "maxItems": model.policy.obs_dim}
    body = schema["paths"]["/act"]["post"]["requestBody"]["content"]["application/json"]
    props = body["schema"]["properties"]
    props["state"]["anyOf"][0] |= dim
    props["states"]["anyOf"][0]["items"] |= dim
    return schema
