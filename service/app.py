"""FastAPI transport for the policy (DESIGN §3.3). The model is built by `ModelManager` and injected;
this module only validates, times and answers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import ORJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from service import __version__
from service.metrics import Metrics
from service.models import LoadedModel, ModelManager
from service.registry import open_registry
from service.settings import ServeSettings
from service.wire import ActRequest, ActResponse, Timing

log = logging.getLogger(__name__)


def unprocessable(field: str, msg: str) -> HTTPException:
    """A 422 in FastAPI's own shape, naming the field and what to do."""
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def as_state_matrix(body: ActRequest, obs_dim: int) -> tuple[np.ndarray, str]:
    field = "state" if body.state is not None else "states"
    rows = [body.state] if body.state is not None else body.states
    assert rows is not None
    for i, row in enumerate(rows):
        if len(row) != obs_dim:
            where = field if field == "state" else f"states[{i}]"
            raise unprocessable(field, f"{where} has {len(row)} values; this model needs obs_dim={obs_dim}")
    with np.errstate(over="ignore"):  # overflow becomes Inf, refused just below
        states = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(states).all():
        bad = int(np.argwhere(~np.isfinite(states))[0][0])
        where = field if field == "state" else f"states[{bad}]"
        raise unprocessable(field, f"{where} contains NaN or Inf (or overflows float32); send finite numbers")
    return states, field


class BodySizeLimit(BaseHTTPMiddleware):
    """413 before reading a body whose declared length is over the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            detail = f"body of {length} bytes is over the {self.max_bytes}-byte limit; send fewer states"
            return ORJSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    manager = ModelManager(settings, open_registry(settings.registry, settings.registry_prefix), metrics)
    rng = np.random.default_rng(settings.seed)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            manager.load()
        except Exception as exc:  # the server still starts; /readyz says why it is not ready
            log.error("no model at start-up", extra={"error": str(exc)})
        yield

    app = FastAPI(title="QIPO policy server", version=__version__, lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.state.manager = manager
    app.state.metrics = metrics
    app.state.settings = settings

    def ready_model() -> LoadedModel:
        model = manager.current
        if model is None:
            raise HTTPException(
                503,
                detail=f"no model loaded: {manager.last_error or 'loading'}",
                headers={"Retry-After": "1"},
            )
        return model

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> ORJSONResponse:
        model = manager.current
        body = {
            "ready": model is not None,
            "model": model.name if model else settings.model_name,
            "version": model.version if model else None,
            "last_error": manager.last_error,
        }
        return ORJSONResponse(body, status_code=200 if model else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = ready_model()
        return {
            "name": model.name,
            "version": model.version,
            "manifest": model.policy.manifest.model_dump(mode="json"),
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/act", response_model=ActResponse, response_class=ORJSONResponse)
    async def act(body: ActRequest) -> ORJSONResponse:
        start = time.perf_counter()
        model = ready_model()
        policy = model.policy
        try:
            states, field = as_state_matrix(body, policy.obs_dim)
            if len(states) > settings.max_batch_rows:
                raise unprocessable(
                    field, f"{len(states)} states is over max_batch_rows={settings.max_batch_rows}"
                )
        except HTTPException:
            metrics.requests.labels(status="422").inc()
            raise
        gen = np.random.default_rng(body.seed) if body.seed is not None else rng
        noise = gen.standard_normal((len(states), policy.noise_dim), dtype=np.float32)
        queued = time.perf_counter()
        raw = policy.act(states, noise)
        infer_done = time.perf_counter()
        actions = np.clip(raw, policy.low, policy.high)
        saturated = (actions <= policy.low + 1e-6) | (actions >= policy.high - 1e-6)
        clipped = bool(saturated.any())
        if clipped:
            metrics.clipped.inc(int(saturated.any(axis=1).sum()))
        metrics.batch_size.observe(len(states))
        total = time.perf_counter() - start
        metrics.latency.observe(total)
        metrics.requests.labels(status="200").inc()
        reply: dict[str, Any] = {
            "model": model.name,
            "version": model.version,
            "clipped": clipped,
            "timing": Timing(
                queue_ms=(queued - start) * 1e3, infer_ms=(infer_done - queued) * 1e3, total_ms=total * 1e3
            ).model_dump(),
            "request_id": body.request_id,
        }
        if body.state is not None:
            reply["action"] = actions[0].tolist()
        else:
            reply["actions"] = actions.tolist()
        return ORJSONResponse(reply)

    return app
