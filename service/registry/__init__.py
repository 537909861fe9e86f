"""Model registry backends behind one interface; `open_registry` picks one from a URL or a path."""

from __future__ import annotations

from pathlib import Path

from service.registry.base import (
    CANARY_ALIAS,
    AliasMove,
    ConflictError,
    IntegrityError,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    UnavailableError,
)
from service.registry.directory import DirectoryRegistry

__all__ = [
    "CANARY_ALIAS",
    "AliasMove",
    "ConflictError",
    "DirectoryRegistry",
    "IntegrityError",
    "ModelVersion",
    "NotFoundError",
    "Registry",
    "RegistryError",
    "UnavailableError",
    "open_registry",
]


def open_registry(location: str | Path, prefix: str = "qipo") -> Registry:
    """`redis://host:port/db` for the Redis backend, anything else is a local directory."""
    text = str(location)
    if text.startswith(("redis://", "rediss://", "unix://")):
        try:
            from service.registry.redis_registry import RedisRegistry
        except ImportError as exc:  # pragma: no cover - until the Redis backend lands
            raise RegistryError("the Redis registry backend is not available in this build") from exc
        return RedisRegistry(text, prefix=prefix)
    return DirectoryRegistry(Path(text))
