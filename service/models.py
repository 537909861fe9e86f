"""Which model is served: resolve an alias in the registry, pull, verify, load, warm up, swap atomically.

Two slots: `current` (the configured alias, normally `production`) and `canary`. A swap is one reference
assignment, so a request sees the old model or the new one, whole. The replaced model is *retired*, not
dropped: in-flight requests hold their own reference (the ORT session is freed only after the last one
ends), and robots that pinned its version for the rest of an episode (`"model": "<version>"`) keep being
served until it has been idle for `drain_seconds`. A failed load never replaces anything.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import canary
from service.metrics import Metrics
from service.policy import ServedPolicy
from service.registry import CANARY_ALIAS, NotFoundError, Registry, UnavailableError
from service.runtime import OnnxPolicy
from service.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedModel:
    name: str
    version: int
    policy: ServedPolicy
    loaded_at: float = field(default_factory=time.monotonic)
    # Only the drain step reads it, and only for retired models: set when a model is retired and when a
    # request pins a retired one (requests to the served slots never write it).
    last_used: float = field(default_factory=time.monotonic)


class ModelNotLoaded(LookupError):
    """A request pinned a version this replica does not hold; the message says what to do.

    `not_yet`: the pin is newer than everything this replica holds (or names the served alias before any
    model is loaded). Robots pin only versions a reply gave them, so during a rolling upgrade that is a
    version another replica already serves: `/act` answers it 503 with Retry-After, which the balancer
    retries on another replica. Any other miss (no canary here, a drained older version) is a conflict
    the robot must resolve itself (409: omit `model`).
    """

    def __init__(self, message: str, not_yet: bool = False) -> None:
        super().__init__(message)
        self.not_yet = not_yet


class ModelManager:
    """Holds the served models; `choose` is the only thing the request path calls (no I/O, no locks)."""

    def __init__(self, settings: ServeSettings, registry: Registry, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.canary: LoadedModel | None = None
        self.canary_share = 0.0
        self.retired: dict[int, LoadedModel] = {}
        self.last_error: str | None = None
        self.failed: dict[int, str] = {}  # version -> why; not retried until the registry moves again
        self._lock = threading.RLock()

    # request path -----------------------------------------------------------------------------------------
    def choose(self, robot_id: str | None = None, ref: str | None = None) -> LoadedModel | None:
        """The model for one request: a pinned version or alias, else canary by robot hash, else current."""
        current, canary_model = self.current, self.canary
        if ref is not None:
            return self._find(ref, current, canary_model)
        if canary_model is not None and canary.routes_to_canary(
            robot_id, self.canary_share, canary_model.name, canary_model.version
        ):
            return canary_model
        return current

    def _find(self, ref: str, current: LoadedModel | None, canary_model: LoadedModel | None) -> LoadedModel:
        if ref == self.settings.model_ref and current is not None:
            return current
        if ref == CANARY_ALIAS and canary_model is not None:
            return canary_model
        if ref.isascii() and ref.isdigit():  # not "²": str.isdigit() takes what int() refuses
            version = int(ref)
            for model in (current, canary_model):
                if model is not None and model.version == version:
                    return model
            retired = self.retired.get(version)
            if retired is not None:
                retired.last_used = time.monotonic()  # a pinned robot keeps it from draining
                return retired
        loaded = sorted({m.version for m in (current, canary_model, *self.retired.values()) if m is not None})
        if (ref == self.settings.model_ref and current is None) or (
            ref.isascii() and ref.isdigit() and all(int(ref) > v for v in loaded)
        ):
            raise ModelNotLoaded(
                f"model {ref!r} is not loaded on this replica yet (loaded versions: {loaded or 'none'}); "
                "retry: another replica may serve it, and this one loads it when the registry moves",
                not_yet=True,
            )
        raise ModelNotLoaded(
            f"model {ref!r} is not loaded on this replica (loaded versions: {loaded or 'none'}); "
            "omit `model` to get the version this robot is assigned"
        )

    def loaded(self) -> list[LoadedModel]:
        return [m for m in (self.current, self.canary, *self.retired.values()) if m is not None]

    # loading ----------------------------------------------------------------------------------------------
    def _artifact_dir(self, name: str, version: int) -> Path:
        """Pull once into the cache; a cached copy is re-verified when it is loaded."""
        dest = self.settings.cache_dir / name / str(version)
        if not (dest / "manifest.json").exists():
            tmp = dest.with_name(f".{version}.partial-{threading.get_ident()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.registry.pull(name, version, tmp)
                shutil.rmtree(dest, ignore_errors=True)
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def _build(self, version: int) -> LoadedModel:
        """Reuse a model already in memory, else pull → verify sha256 → ORT load → warm up."""
        for model in self.loaded():
            if model.version == version:
                return model
        name = self.settings.model_name
        start = time.perf_counter()
        artifact = self._artifact_dir(name, version)
        try:
            policy = OnnxPolicy.load(
                artifact,
                self.settings.ort_intra_threads,
                self.settings.ort_inter_threads,
                provider=self.settings.ort_provider,
                cuda_graph=self.settings.ort_cuda_graph,
                graph_rows=self.settings.max_batch_size,
            )
            policy.metadata = dataclasses.replace(policy.metadata, version=version)
            policy.warmup(self.settings.warmup_batches)
        except Exception:
            shutil.rmtree(artifact, ignore_errors=True)  # a bad cached copy is pulled again next time
            raise
        self.metrics.model_load.observe(time.perf_counter() - start)
        return LoadedModel(name=name, version=version, policy=policy)

    def _install(self, slot: str, version: int | None) -> LoadedModel | None:
        """Load `version` into `slot` ('current' or 'canary') and swap; the old one is retired."""
        old: LoadedModel | None = getattr(self, slot)
        if (old.version if old else None) == version:
            return old
        name = self.settings.model_name
        try:
            new = None if version is None else self._build(version)
        except Exception as exc:
            self.last_error = f"{slot} -> version {version}: {type(exc).__name__}: {exc}"
            self.metrics.model_swaps.labels(result="failed").inc()
            log.error(
                "model load failed; still serving the old model",
                extra={
                    "model": name,
                    "slot": slot,
                    "version": version,
                    "serving": old.version if old else None,
                    "error": str(exc),
                },
            )
            if version is not None and not isinstance(exc, UnavailableError):
                self.failed[version] = self.last_error
            raise
        if old is not None:  # retire first: a robot pinned to `old` must never find it missing mid-swap
            old.last_used = time.monotonic()
            self.retired[old.version] = old
        setattr(self, slot, new)  # the swap: one reference assignment
        if new is not None:
            self.retired.pop(new.version, None)
            self.metrics.model_info.labels(name=name, version=str(new.version)).set(1)
        if old is not None and old in (self.current, self.canary):
            self.retired.pop(old.version, None)  # still in a slot (e.g. canary promoted): not retired
        self.metrics.model_swaps.labels(result="ok").inc()
        log.info(
            "model swapped",
            extra={"model": name, "slot": slot, "from": old.version if old else None, "to": version},
        )
        return new

    def load(self, ref: str | int | None = None) -> LoadedModel:
        """Load `ref` (default: the configured alias) into the main slot; on failure the old one serves on."""
        ref = self.settings.model_ref if ref is None else ref
        with self._lock:
            try:
                version = self.registry.resolve(self.settings.model_name, ref)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.model_swaps.labels(result="failed").inc()
                log.error("model load failed", extra={"ref": str(ref), "error": str(exc)})
                raise
            model = self._install("current", version)
            assert model is not None
            self.last_error = None
            return model

    def sync(self, *, retry_failed: bool = False) -> bool:
        """Bring both slots to what the registry says now; True if anything changed.

        Raises UnavailableError when the registry cannot be read (the caller backs off and retries); a load
        failure is recorded (metric, log, `last_error`) and the slot keeps its old model.
        """
        name = self.settings.model_name
        with self._lock:
            if retry_failed:
                self.failed.clear()
            aliases = self.registry.aliases(name)
            share = self.registry.canary_share(name)
            ref = self.settings.model_ref
            want = {
                "current": int(ref) if ref.isdigit() else aliases.get(ref),
                "canary": aliases.get(CANARY_ALIAS) if ref != CANARY_ALIAS else None,
            }
            before = (self.current, self.canary, self.canary_share)
            errors = []
            for slot, version in want.items():
                if slot == "current" and version is None:
                    if self.current is None:  # say why nothing serves (no versions, no such alias …)
                        try:
                            self.registry.resolve(name, ref)
                        except NotFoundError as exc:
                            errors.append(str(exc))
                    continue  # an alias that vanished: keep serving rather than go dark
                if version is not None and version in self.failed:
                    errors.append(self.failed[version])
                    continue
                try:
                    self._install(slot, version)
                except UnavailableError:
                    raise
                except Exception:
                    errors.append(self.last_error or "")
            self.canary_share = share if self.canary is not None else 0.0
            self.last_error = "; ".join(errors) or None
            self.release_drained()
            return before != (self.current, self.canary, self.canary_share)

    def release_drained(self, now: float | None = None) -> list[int]:
        """Drop retired models idle for `drain_seconds` (keep at most `max_retired`): the drain step."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = sorted(self.retired.values(), key=lambda m: m.last_used)
            drop = [m for m in idle if now - m.last_used >= self.settings.drain_seconds]
            drop += idle[len(drop) : max(len(drop), len(idle) - self.settings.max_retired)]
            for model in drop:
                del self.retired[model.version]
                if model.version not in {m.version for m in (self.current, self.canary) if m}:
                    self.metrics.model_info.remove(model.name, str(model.version))
                log.info("model drained", extra={"model": model.name, "version": model.version})
            return [m.version for m in drop]

    def status(self) -> dict[str, Any]:
        """Readiness detail: what serves, the canary split, and why the last load failed (if it did)."""
        current, canary_model = self.current, self.canary
        return {
            "ready": current is not None,
            "model": current.name if current else self.settings.model_name,
            "version": current.version if current else None,
            "canary": None
            if canary_model is None
            else {"version": canary_model.version, "share": self.canary_share},
            "retired": sorted(self.retired),
            "last_error": self.last_error,
        }
