"""FastAPI app factory. The model is built by `ModelManager` and injected; the routes only validate, time and
answer. Each app gets one `deps.Services` (settings, metrics, manager, batcher, follower, act service);
routes receive what they need through the typed dependencies of `service.deps`, and the `/act` routes are
bound to the app's `ActService` when the app is built.

Rooms: `middleware` (body-size limit, the `/act` fast lane), `probes` (health, readiness, model, metrics),
`act` (the hot path), `admin`, `openapi` (schema with the model's dims, offline Swagger UI).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.act import ActService, act_routes, pick_served
from service.admin import router as admin_router
from service.batcher import BatchConfig, MicroBatcher
from service.deps import Services, attach
from service.follower import Follower, load_at_startup
from service.metrics import Metrics
from service.middleware import ActFastLane, BodySizeLimit
from service.models import ModelManager
from service.openapi import add_docs, openapi_with_dims
from service.probes import router as probes_router
from service.registry import open_registry
from service.settings import ServeSettings

log = logging.getLogger(__name__)


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
            executor=settings.batch_executor,
        ),
        metrics,
        seed=settings.seed,
    )
    act = ActService(settings, metrics, manager, batcher, pick_served(manager))

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

    # The service exports Prometheus. FastAPI's native OpenTelemetry, left on, asks the global providers on
    # every request whether anyone configured one: ~10 µs per /act for nothing unless QIPO_OTEL is set.
    otel = settings.otel
    app = FastAPI(
        title="QIPO policy server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel, "operation_spans": otel},
    )
    app.add_middleware(ActFastLane, act=act.asgi)  # added first: inside the body-size limit
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    attach(app, Services(settings, metrics, manager, batcher, follower, act))
    # Routes go straight onto the app (FastAPI ≥0.165 would nest an included router as one opaque entry,
    # hiding its paths from `app.routes`); /act first, since routes are matched in order.
    app.router.routes.extend(act_routes(act))
    app.router.routes.extend(probes_router.routes)
    app.include_router(admin_router)
    add_docs(app)
    # FastAPI's documented way to customise the schema is to replace this method on the instance.
    app.openapi = lambda: openapi_with_dims(app, manager)  # type: ignore[method-assign]  # see above
    return app
