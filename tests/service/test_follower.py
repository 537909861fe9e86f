"""Replica hot reload: follows Redis (stream + generation) and a directory (generation file); a tampered
version is refused and the old model keeps serving; Redis outages do not fail a single /act."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.registry import DirectoryRegistry
from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import Replica, private_redis, replicas
from tests.service.registry_fixtures import MODEL


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def act_version(rep: Replica) -> int:
    resp = httpx.post(f"{rep.url}/act", json={"state": [0.1, 0.2, 0.3]}, timeout=5)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["version"])


class Hammer:
    """A robot acting in a loop on a thread; counts every request and every failure."""

    def __init__(self, rep: Replica) -> None:
        self.rep, self.ok, self.failed, self.versions = rep, 0, [], set()  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    resp = client.post(
                        f"{self.rep.url}/act", json={"state": [0.0, 1.0, 0.5], "robot_id": "r1"}
                    )
                    if resp.status_code == 200:
                        self.ok += 1
                        self.versions.add(resp.json()["version"])
                    else:
                        self.failed.append(f"{resp.status_code} {resp.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(0.005)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_tampered_version_is_refused_and_old_model_keeps_serving(
    redis_registry: RedisRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    redis_registry.publish(artifacts[0])
    redis_registry.chunk_bytes = 16 * 1024
    redis_registry.publish(artifacts[1])
    redis_registry.promote(MODEL, "production", 1)
    base = redis_registry._k(MODEL, "v", 2, "c", "policy.onnx")
    chunk = redis_registry.client.get(f"{base}:1")
    assert isinstance(chunk, bytes)
    redis_registry.client.set(f"{base}:1", chunk[:-1] + bytes([chunk[-1] ^ 1]))
    with replicas(1, redis_registry.url, redis_registry.prefix, tmp_path, poll_seconds=0.3) as (rep,):
        assert act_version(rep) == 1
        with Hammer(rep) as robot:
            redis_registry.promote(MODEL, "production", 2)
            wait_for(lambda: "tampered" in str(rep.ready()["last_error"]), 10, "the failed load reported")
            ready = httpx.get(f"{rep.url}/readyz", timeout=5)
            assert ready.status_code == 200 and ready.json()["version"] == 1
            metrics = httpx.get(f"{rep.url}/metrics", timeout=5).text
            assert 'qipo_model_swaps_total{result="failed"} 1.0' in metrics
            assert 'qipo_model_info{name="pendulum-qipo",version="1"} 1.0' in metrics
            # a good version published and promoted afterwards goes live
            redis_registry.publish(artifacts[2])
            redis_registry.promote(MODEL, "production", 3)
            wait_for(lambda: rep.ready()["version"] == 3, 10, "swap to version 3")
            wait_for(lambda: 3 in robot.versions, 10, "the robot served by version 3")
        assert rep.ready()["last_error"] is None
    assert robot.failed == [] and robot.ok > 0 and robot.versions == {1, 3}
    failures = [
        json.loads(line)
        for line in rep.log.read_text().splitlines()
        if line.startswith("{") and "model load failed" in line
    ]
    assert failures and failures[0]["version"] == 2 and failures[0]["serving"] == 1
    assert failures[0]["level"] == "error" and "tampered" in failures[0]["error"]


def test_directory_registry_is_followed_by_polling(artifacts: list[Path], tmp_path: Path) -> None:
    reg = DirectoryRegistry(tmp_path / "registry")
    reg.publish(artifacts[0])
    reg.publish(artifacts[1])
    reg.promote(MODEL, "production", 1)
    with replicas(1, str(reg.root), "qipo", tmp_path, poll_seconds=0.2) as (rep,):
        assert act_version(rep) == 1
        reg.promote(MODEL, "production", 2)
        took = wait_for(lambda: act_version(rep) == 2, 10, "swap to version 2")
        print(f"\ndirectory registry: swap seen after {took:.2f} s")
        assert rep.ready()["registry"]["backend"] == "DirectoryRegistry"  # type: ignore[index]


def test_redis_outage_no_failed_act_and_catch_up(artifacts: list[Path], tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as server:
        reg = RedisRegistry(server.url, prefix=f"qipo-test-{uuid.uuid4().hex[:8]}", socket_timeout=2.0)
        for art in artifacts[:2]:
            reg.publish(art)
        reg.promote(MODEL, "production", 1)
        with (
            replicas(1, server.url, reg.prefix, tmp_path, poll_seconds=0.3) as (rep,),
            Hammer(rep) as robot,
        ):
            # 1. the replica's connections are killed; a promotion made right then is still picked up
            killed = server.kill_clients(f"qipo:{reg.prefix}")
            reg.promote(MODEL, "production", 2)
            caught_up_kill = wait_for(lambda: rep.ready()["version"] == 2, 15, "catch-up after CLIENT KILL")
            # 2. Redis goes away: still serving, still ready, readiness says the registry is unreachable
            down = threading.Thread(target=server.restart, args=(3.0,))
            down.start()
            wait_for(lambda: rep.ready()["registry"]["reachable"] is False, 10, "outage noticed")  # type: ignore[index]
            during = httpx.get(f"{rep.url}/readyz", timeout=5)
            assert during.status_code == 200 and during.json()["version"] == 2
            assert "cannot reach Redis" in during.json()["registry"]["error"]
            down.join()
            # 3. back: a promotion made while the replica is still backing off is caught up
            reg.promote(MODEL, "production", 1)
            caught_up_restart = wait_for(lambda: rep.ready()["version"] == 1, 20, "catch-up after restart")
            assert rep.ready()["registry"]["reachable"] is True  # type: ignore[index]
        reg.close()
    print(
        f"\noutage: {robot.ok} /act ok, {len(robot.failed)} failed; killed {killed} connections, caught up "
        f"in {caught_up_kill:.2f} s; after restart caught up in {caught_up_restart:.2f} s"
    )
    assert killed >= 1
    assert robot.failed == [] and robot.ok > 50


def test_manager_slots_pins_and_drain(artifacts: list[Path], tmp_path: Path) -> None:
    """In-process: canary routing, pinned versions served from retired models until drained."""
    from service import canary
    from service.metrics import Metrics
    from service.models import ModelManager, ModelNotLoaded
    from service.settings import ServeSettings

    reg = DirectoryRegistry(tmp_path / "registry")
    for art in artifacts:
        reg.publish(art)
    reg.promote(MODEL, "production", 1)
    canary.start(reg, MODEL, 3, 0.5)
    settings = ServeSettings(
        registry=str(reg.root),
        cache_dir=tmp_path / "cache",
        drain_seconds=5.0,
        max_retired=1,
        warmup_batches=1,
    )
    manager = ModelManager(settings, reg, Metrics())
    assert manager.sync() is True and manager.sync() is False
    assert (manager.current and manager.current.version, manager.canary_share) == (1, 0.5)
    robots = [f"r{i}" for i in range(40)]
    on_canary = {r for r in robots if canary.routes_to_canary(r, 0.5, MODEL, 3)}
    assert 0 < len(on_canary) < len(robots)
    for r in robots:
        chosen = manager.choose(r)
        assert chosen is not None and chosen.version == (3 if r in on_canary else 1)
    assert manager.choose(None).version == 1  # type: ignore[union-attr]

    reg.promote(MODEL, "production", 2)
    manager.sync()
    assert manager.current.version == 2 and sorted(manager.retired) == [1]  # type: ignore[union-attr]
    assert manager.choose("r0", "1").version == 1  # type: ignore[union-attr]  # a pinned episode finishes on v1
    assert manager.choose("r0", "production").version == 2  # type: ignore[union-attr]
    assert manager.choose("r0", "canary").version == 3  # type: ignore[union-attr]
    now = time.monotonic()
    assert manager.release_drained(now + 4.0) == []  # still within the drain time
    assert manager.release_drained(now + 6.0) == [1]
    with pytest.raises(ModelNotLoaded, match=r"loaded versions: \[2, 3\]"):
        manager.choose("r0", "1")

    canary.promote(reg, MODEL)  # production takes the canary's already-loaded model: no reload
    canary_model = manager.canary
    manager.sync()
    assert manager.current is canary_model and manager.canary is None and manager.canary_share == 0.0
    assert sorted(manager.retired) == [2]
