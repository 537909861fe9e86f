"""Admin routes: reload the served models, move an alias. Bearer token from `QIPO_ADMIN_TOKEN`.

No header → 401 (with `WWW-Authenticate: Bearer`), wrong token → 403, no token configured → 403 saying
that admin is disabled: an unset token never means "open".
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from service import canary
from service.deps import FollowerDep, ManagerDep, SettingsDep
from service.registry import CANARY_ALIAS, ConflictError, NotFoundError, RegistryError, UnavailableError

bearer = HTTPBearer(auto_error=False)


async def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="admin routes are disabled: set QIPO_ADMIN_TOKEN on the server to enable",
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="admin routes need `Authorization: Bearer <QIPO_ADMIN_TOKEN>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(
        credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admin token is wrong")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class PromoteRequest(BaseModel):
    ref: str = Field(description="Version number or alias to point at")
    alias: str = Field("production", description="Alias to move")
    expected: int | None = Field(
        None, description="Compare-and-set: move only if the alias points here now (default: value read now)"
    )
    canary_share: float | None = Field(
        None, ge=0, le=1, description="With alias=canary: fraction of robots routed to it"
    )


def _http_error(exc: RegistryError) -> HTTPException:
    if isinstance(exc, ConflictError):
        return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    if isinstance(exc, NotFoundError):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, UnavailableError):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "1"}
        )
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc))


@router.post("/reload")
async def reload(follower: FollowerDep) -> dict[str, Any]:
    """Sync with the registry now and retry versions whose load failed."""
    try:
        return await run_in_threadpool(follower.reload)
    except RegistryError as exc:
        raise _http_error(exc) from exc


@router.post("/promote")
async def promote(body: PromoteRequest, manager: ManagerDep, follower: FollowerDep) -> dict[str, Any]:
    """Move an alias (atomic compare-and-set) and load it here; other replicas follow the stream."""
    name = manager.settings.model_name

    def run() -> dict[str, Any]:
        reg = manager.registry
        if body.alias == CANARY_ALIAS and body.canary_share is not None:
            move = canary.start(reg, name, body.ref, body.canary_share)
        elif body.expected is not None:
            move = reg.set_alias(name, body.alias, reg.resolve(name, body.ref), expected=body.expected)
        else:
            move = reg.promote(name, body.alias, body.ref, reason="admin promote")
        return {"move": move.model_dump(mode="json"), "replica": follower.reload()}

    try:
        return await run_in_threadpool(run)
    except RegistryError as exc:
        raise _http_error(exc) from exc
