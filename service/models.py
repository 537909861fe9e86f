"""Which model is served: resolve an alias in the registry, pull, verify, load, warm up, swap atomically."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.metrics import Metrics
from service.registry import Registry
from service.runtime import OnnxPolicy
from service.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    policy: OnnxPolicy


class ModelManager:
    """Holds the current model; a swap is one reference assignment, so a request sees old or new, whole."""

    def __init__(self, settings: ServeSettings, registry: Registry, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def _artifact_dir(self, name: str, version: int) -> Path:
        """Pull once into the cache; a cached copy is re-verified when it is loaded."""
        dest = self.settings.cache_dir / name / str(version)
        if not (dest / "manifest.json").exists():
            tmp = dest.with_name(f".{version}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            self.registry.pull(name, version, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        return dest

    def load(self, ref: str | int | None = None) -> LoadedModel:
        """Load `ref` (default: the configured alias); on failure the old model keeps serving."""
        name = self.settings.model_name
        ref = self.settings.model_ref if ref is None else ref
        start = time.perf_counter()
        with self._lock:
            try:
                version = self.registry.resolve(name, ref)
                if self.current is not None and self.current.version == version:
                    return self.current
                artifact = self._artifact_dir(name, version)
                try:
                    policy = OnnxPolicy.load(
                        artifact, self.settings.ort_intra_threads, self.settings.ort_inter_threads
                    )
                except Exception:
                    shutil.rmtree(artifact, ignore_errors=True)  # a bad cached copy is pulled again next time
                    raise
                policy.warmup(self.settings.warmup_batches)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.model_swaps.labels(result="failed").inc()
                log.error("model load failed", extra={"model": name, "ref": str(ref), "error": str(exc)})
                raise
            old = self.current
            self.current = LoadedModel(name=name, version=version, policy=policy)
            self.last_error = None
            if old is not None:
                self.metrics.model_info.remove(old.name, str(old.version))
            self.metrics.model_info.labels(name=name, version=str(version)).set(1)
            self.metrics.model_swaps.labels(result="ok").inc()
            self.metrics.model_load.observe(time.perf_counter() - start)
            log.info("model loaded", extra={"model": name, "version": version})
            return self.current
