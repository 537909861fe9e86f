"""Replica hot reload: follow the registry and bring the served models to what its aliases say.

With Redis the follower blocks on the event stream (XREAD BLOCK), so a promotion reaches every replica in
milliseconds, and it also compares the generation counter on every wake-up: a stream read can be missed
across a reconnect, the counter cannot. A directory registry has no stream, so its generation file is
polled. When the registry is unreachable the loaded models keep serving; the follower retries with
exponential backoff (tenacity) and catches up with one sync when the registry answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import Gauge
from starlette.concurrency import run_in_threadpool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from service.metrics import Metrics
from service.models import ModelManager
from service.registry import Registry, UnavailableError
from service.settings import ServeSettings

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self, manager: ModelManager, registry: Registry, metrics: Metrics, poll_seconds: float = 1.0
    ):
        self.manager = manager
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.reachable: bool | None = None
        self.error: str | None = None
        self.generation: int | None = None
        self.last_sync: float | None = None
        self.outages = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events = registry.event_stream()
        self._up = Gauge(
            "qipo_registry_up", "1 if the registry answered the last read", registry=metrics.registry
        )
        self._gen = Gauge(
            "qipo_registry_generation",
            "Registry generation this replica has synced to",
            registry=metrics.registry,
        )

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qipo-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """The `registry` part of /readyz: whether it answers, and how far this replica has followed."""
        return {
            "backend": type(self.registry).__name__,
            "reachable": self.reachable,
            "error": self.error,
            "generation": self.generation,
            "seconds_since_sync": None
            if self.last_sync is None
            else round(time.monotonic() - self.last_sync, 3),
            "outages": self.outages,
        }

    # loop -------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(UnavailableError),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            stop=self._stopped,
            sleep=self._sleep,
            before_sleep=self._on_outage,
            reraise=False,
        )
        while not self._stop.is_set():
            try:
                retrying(self._follow)
            except Exception as exc:  # never let the thread die: log and start over
                log.exception("registry follower error", extra={"error": str(exc)})
                self._stop.wait(self.poll_seconds)

    def _stopped(self, _state: RetryCallState) -> bool:
        return self._stop.is_set()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _on_outage(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if self.reachable is not False:
            self.outages += 1
            log.warning("registry unreachable; still serving the loaded model", extra={"error": str(exc)})
        self.reachable = False
        self.error = str(exc)
        self._up.set(0)

    def _follow(self) -> None:
        """Sync whenever the generation moves; return only when stopped, raise UnavailableError on outage."""
        events = self._events
        last_id = events.last_event_id() if events is not None else "0-0"
        while not self._stop.is_set():
            gen = self.registry.generation()
            if self.reachable is False:
                log.info("registry reachable again; catching up", extra={"generation": gen})
            self.reachable, self.error = True, None
            self._up.set(1)
            if gen != self.generation:
                self.manager.sync(retry_failed=self.generation is not None)
                self.generation = gen
                self._gen.set(gen)
            self.last_sync = time.monotonic()
            self.manager.release_drained()
            if events is not None:
                block_ms = min(int(self.poll_seconds * 1000), 2000)  # stay under the socket timeout
                moves = events.read_events(last_id, block_ms)
                if moves:
                    last_id = moves[-1][0]
            else:
                self._stop.wait(self.poll_seconds)

    def reload(self) -> dict[str, Any]:
        """Admin reload: sync now and retry versions that failed before."""
        self.manager.sync(retry_failed=True)
        self.generation = self.registry.generation()
        self.last_sync = time.monotonic()
        return self.manager.status()


async def load_at_startup(manager: ModelManager, follower: Follower, settings: ServeSettings) -> None:
    """First load, retried with backoff while the registry is unreachable; then follow it.

    Never raises: a replica without a model still starts (its /readyz says why) and the follower loads one
    as soon as the registry can provide it.
    """
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(UnavailableError),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_after_delay(settings.startup_timeout_seconds),
            reraise=True,
        ):
            with attempt:
                await run_in_threadpool(manager.sync)
        if manager.current is None:
            await run_in_threadpool(manager.load)  # raises with the reason (no alias, bad artifact …)
    except Exception as exc:
        log.error("no model at start-up; the follower keeps trying", extra={"error": str(exc)})
    if settings.follow_registry:
        follower.start()
