"""The objects an app shares with its routes, and typed FastAPI dependencies that hand them out.

`create_app` builds one `Services` and keeps it on the app; routes ask for what they use with the
`Annotated` aliases below (`manager: ManagerDep`) instead of reading `app.state` by name. The dependency
functions are `async` on purpose: FastAPI runs plain `def` dependencies in a thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from service.act import ActService
from service.batcher import MicroBatcher
from service.follower import Follower
from service.metrics import Metrics
from service.models import ModelManager
from service.settings import ServeSettings


@dataclass(frozen=True)
class Services:
    settings: ServeSettings
    metrics: Metrics
    manager: ModelManager
    batcher: MicroBatcher
    follower: Follower
    act: ActService


def attach(app: Starlette, services: Services) -> None:
    app.state.services = services


def services_of(app: Starlette) -> Services:
    """The app's services (tests and tools use this; routes use the dependencies)."""
    return cast(Services, app.state.services)


async def _settings(conn: HTTPConnection) -> ServeSettings:
    return services_of(conn.app).settings


async def _metrics(conn: HTTPConnection) -> Metrics:
    return services_of(conn.app).metrics


async def _manager(conn: HTTPConnection) -> ModelManager:
    return services_of(conn.app).manager


async def _follower(conn: HTTPConnection) -> Follower:
    return services_of(conn.app).follower


SettingsDep = Annotated[ServeSettings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
ManagerDep = Annotated[ModelManager, Depends(_manager)]
FollowerDep = Annotated[Follower, Depends(_follower)]
