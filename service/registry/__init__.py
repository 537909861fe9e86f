"""Model registry backends behind one interface; `open_registry` picks one from a URL or a path."""

from __future__ import annotations

import re
from pathlib import Path

from service.registry.base import (
    CANARY_ALIAS,
    AliasMove,
    ConflictError,
    EventStream,
    IntegrityError,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    ShapeError,
    UnavailableError,
)
from service.registry.directory import DirectoryRegistry

__all__ = [
    "CANARY_ALIAS",
    "AliasMove",
    "ConflictError",
    "DirectoryRegistry",
    "EventStream",
    "IntegrityError",
    "ModelVersion",
    "NotFoundError",
    "Registry",
    "RegistryError",
    "ShapeError",
    "UnavailableError",
    "open_registry",
]


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# `redis:/host:6379`, `redis//host`, `redis:host`: a Redis URL with a typo, not a directory name.
_MISTYPED_REDIS = re.compile(r"^(rediss?|unix)(:/?(?!/)|//)", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def open_registry(location: str | Path, prefix: str = "qipo") -> Registry:
    """`redis://host:port/db` for the Redis backend, a path for a local directory; a location that looks
    like a mistyped or foreign URL is refused rather than taken for a directory name."""
    text = str(location)
    if isinstance(location, str) and not text.startswith(REDIS_SCHEMES):
        if _MISTYPED_REDIS.match(text):
            raise RegistryError(
                f"registry {text!r} looks like a mistyped Redis URL; write redis://host:port/db (two "
                "slashes after the scheme)"
            )
        if _SCHEME.match(text):
            raise RegistryError(
                f"registry {text!r} has a scheme the registry does not speak; use redis://host:port/db, "
                "rediss://… or unix://… for Redis, or a directory path"
            )
    if text.startswith(REDIS_SCHEMES):
        from service.registry.redis_registry import RedisRegistry  # redis is imported only when used

        return RedisRegistry(text, prefix=prefix)
    return DirectoryRegistry(Path(text))
