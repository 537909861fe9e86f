"""Probes and read-only views: liveness, readiness, the loaded model, Prometheus metrics.

`GET` and `HEAD` on each: load balancers and uptime checkers often probe with `HEAD` (same status and
headers, no body). The schema lists the `GET`s; a `HEAD` twin in it would repeat their operation ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import FollowerDep, ManagerDep, MetricsDep
from service.models import ModelNotLoaded

router = APIRouter()
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def probe(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    """Register `GET path` (documented) and `HEAD path` (same handler, left out of the schema)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["GET"], summary=summary)
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return endpoint

    return register


@probe("/healthz", "The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probe("/readyz", "A verified model is loaded (503 with the reason if not)")
async def readyz(manager: ManagerDep, follower: FollowerDep) -> Response:
    body = {**manager.status(), "registry": follower.status()}  # serving a verified model = ready
    return Response(
        orjson.dumps(body),
        status.HTTP_200_OK if body["ready"] else status.HTTP_503_SERVICE_UNAVAILABLE,
        media_type="application/json",
    )


@probe("/v1/models", "The loaded model and its manifest")
async def models(manager: ManagerDep) -> dict[str, Any]:
    try:
        model = manager.choose()
    except ModelNotLoaded as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"no model loaded: {manager.last_error or 'loading'}",
            headers={"Retry-After": "1"},
        )
    return {
        "name": model.name,
        "version": model.version,
        "manifest": model.policy.manifest.model_dump(mode="json"),
    }


@probe("/metrics", "Prometheus metrics")
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
