"""The registry interface (docs/architecture.md, "Registry"): immutable numbered versions per model name,
mutable aliases."""

from __future__ import annotations

import abc
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from service.artifact import Manifest

ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class RegistryError(RuntimeError):
    """A registry operation was refused; the message says why and what to do."""


class NotFoundError(RegistryError):
    """The model, version or alias does not exist."""


class ConflictError(RegistryError):
    """A compare-and-set lost a race or a version would be overwritten."""


class IntegrityError(RegistryError):
    """Stored bytes do not match their manifest (corrupted or tampered with); nothing was loaded."""


class UnavailableError(RegistryError):
    """The registry's server cannot be reached; callers keep what they have and retry later."""


class ShapeError(RegistryError):
    """A new version would take other observation/action widths than the model's previous version."""


CANARY_ALIAS = "canary"


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


class ModelVersion(BaseModel):
    name: str
    version: int = Field(ge=1)
    manifest: Manifest
    published_at: str


class AliasMove(BaseModel):
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    at: str = Field(default_factory=utcnow)
    reason: str = ""


def check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise RegistryError(f"canary share must be between 0 and 1 (a fraction of robots), got {share}")
    return float(share)


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias) or alias.isdigit():
        raise RegistryError(
            f"alias {alias!r} is invalid: use a letter then letters, digits, '-' or '_' (max 64 chars)"
        )
    return alias


Event = tuple[str, dict[str, str]]  # (stream entry id, fields)


class EventStream(Protocol):
    """A backend's stream of alias moves, for followers that wait on it instead of polling."""

    def last_event_id(self) -> str:
        """The id of the newest event ('0-0' when there is none)."""
        ...

    def read_events(self, last_id: str, block_ms: int) -> list[Event]:
        """Events after `last_id`, waiting up to `block_ms` for one; raises UnavailableError."""
        ...


class Registry(abc.ABC):
    """One interface for every backend, so the CLI and the server never care where versions live."""

    def event_stream(self) -> EventStream | None:
        """The backend's event stream, or None when it has none (followers then poll `generation`)."""
        return None

    @abc.abstractmethod
    def publish(self, artifact_dir: Path, *, force: bool = False) -> ModelVersion:
        """Verify the artifact, store it as the next version of `manifest.name`, atomically.

        Refused (ShapeError) when its obs/act widths differ from the previous version's, unless `force`:
        robots built for one shape would get 422 from every server whose alias moves to the other.
        """

    @abc.abstractmethod
    def models(self) -> list[str]: ...

    @abc.abstractmethod
    def versions(self, name: str) -> list[ModelVersion]: ...

    @abc.abstractmethod
    def get(self, name: str, version: int) -> ModelVersion: ...

    @abc.abstractmethod
    def aliases(self, name: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def set_alias(
        self, name: str, alias: str, version: int | None, *, expected: int | None = None, reason: str = ""
    ) -> AliasMove:
        """Point `alias` at `version` (None: remove it) only if it now points at `expected`.

        A strict compare-and-set: `expected=None` means "the alias must not exist yet". On a lost race this
        raises ConflictError and nothing changes; a move appends to the history and bumps `generation`.
        """

    @abc.abstractmethod
    def history(self, name: str, alias: str | None = None) -> list[AliasMove]: ...

    @abc.abstractmethod
    def pull(self, name: str, version: int, dest: Path) -> Path:
        """Copy a version's files into `dest` and verify every sha256; return the artifact directory."""

    @abc.abstractmethod
    def generation(self) -> int:
        """A counter bumped by every alias move, so followers can poll for change cheaply."""

    @abc.abstractmethod
    def canary_share(self, name: str) -> float:
        """Fraction of robots (0..1) routed to the `canary` alias while it exists."""

    @abc.abstractmethod
    def set_canary_share(self, name: str, share: float) -> None:
        """Store the canary share and bump `generation`, so replicas re-route."""

    @abc.abstractmethod
    def _delete_version(self, name: str, version: int) -> bool:
        """Remove one version unless an alias points at it (checked atomically); True if removed."""

    def gc(self, name: str, retention_seconds: float, *, dry_run: bool = False) -> list[int]:
        """Remove versions no alias points to and published more than `retention_seconds` ago.

        The newest version is always kept, so a version number is never handed out twice.
        """
        if retention_seconds < 0:
            raise RegistryError(f"retention must be >= 0 seconds, got {retention_seconds}")
        versions = self.versions(name)
        if not versions:
            return []
        pointed = set(self.aliases(name).values())
        now = datetime.now(UTC)
        removed: list[int] = []
        for mv in versions[:-1]:
            if mv.version in pointed:
                continue
            try:
                age = (now - datetime.fromisoformat(mv.published_at)).total_seconds()
            except ValueError:
                continue  # unknown age: keep it
            if age <= retention_seconds:
                continue
            if dry_run or self._delete_version(name, mv.version):
                removed.append(mv.version)
        return removed

    def resolve(self, name: str, ref: str | int) -> int:
        """A version number, or an alias name, to a version number."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            self.get(name, version)
            return version
        aliases = self.aliases(name)
        if ref not in aliases and not self.versions(name):
            raise NotFoundError(f"model {name!r} has no versions; publish one with `qipo registry publish`")
        if ref not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise NotFoundError(f"model {name!r} has no alias {ref!r} (aliases: {known}); promote one first")
        return aliases[ref]

    def promote(self, name: str, alias: str, ref: str | int, reason: str = "promote") -> AliasMove:
        """Move `alias` to `ref` atomically against the value read just before (fails on a race)."""
        target = self.resolve(name, ref)
        current = self.aliases(name).get(alias)
        return self.set_alias(name, alias, target, expected=current, reason=reason)

    def rollback(self, name: str, alias: str) -> AliasMove:
        """Point `alias` back at the version it pointed to before its last move."""
        moves = self.history(name, alias)
        if not moves or moves[-1].from_version is None:
            raise RegistryError(f"alias {alias!r} of {name!r} has no earlier version to roll back to")
        last = moves[-1]
        return self.set_alias(name, alias, last.from_version, expected=last.to_version, reason="rollback")

    def check_shape(self, manifest: Manifest) -> None:
        """Raise ShapeError when `manifest` changes the dims of its model's latest version."""
        versions = self.versions(manifest.name)
        if not versions:
            return
        prev = versions[-1]
        old, new = prev.manifest, manifest
        if (old.obs_dim, old.act_dim) == (new.obs_dim, new.act_dim):
            return
        envs = f" ({old.env_id} → {new.env_id})" if old.env_id != new.env_id else ""
        raise ShapeError(
            f"refusing to publish {new.name}: version {prev.version} takes obs_dim={old.obs_dim}, "
            f"act_dim={old.act_dim} and this artifact obs_dim={new.obs_dim}, act_dim={new.act_dim}{envs}; "
            "robots of the old shape would get 422 once an alias moves. Export it under another name "
            "(qipo export --name) or pass --force"
        )

    def ping(self) -> bool:
        """True when the backend answers (a directory always does)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, a directory has nothing to release
        """Release connections (nothing to do for a directory)."""

    def latest(self, name: str) -> int:
        versions = self.versions(name)
        if not versions:
            raise NotFoundError(f"model {name!r} has no versions; publish one with `qipo registry publish`")
        return versions[-1].version
