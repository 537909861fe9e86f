"""The floor: a FastAPI app with `/act`'s route, orjson body parsing and reply shape, but no model, no
validation and no batching. What a box can answer at all with FastAPI + uvicorn; every serving number is
read against it."""

from __future__ import annotations

import gc
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

MODEL = "pendulum-qipo"  # the name the benchmark's artifacts are published under


def floor_app() -> FastAPI:
    app = FastAPI()
    timing = {"queue_ms": 0.0, "infer_ms": 0.0, "total_ms": 0.0}

    @app.post("/act")
    async def act(request: Request) -> Response:
        body = orjson.loads(await request.body())
        reply = {
            "model": MODEL,
            "version": 1,
            "clipped": False,
            "timing": timing,
            "request_id": body.get("request_id"),
            "action": [0.0] * 1,
        }
        return Response(orjson.dumps(reply), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def bench_app(kind: str, registry: str, cache: str, **settings: Any) -> Any:
    """The floor app, or the real server (`service.app.create_app`) on the registry's production model."""
    if kind == "floor":
        return floor_app()
    from service.app import create_app
    from service.settings import ServeSettings

    values = {"registry": registry, "cache_dir": cache, "model_name": MODEL, **settings}
    return create_app(ServeSettings.model_validate(values))


def serve(kind: str, port: int, registry: str, cache: str, executor: str) -> None:
    """Run the floor or the real server under uvicorn (uvloop, httptools, no access log) on loopback."""
    import uvicorn

    if kind == "floor":
        app = floor_app()
        gc.collect()
        gc.freeze()  # same start-up treatment as the real server
    else:
        app = bench_app(kind, registry, cache, batch_executor=executor)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
