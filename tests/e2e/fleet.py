"""A small fleet on loopback: replica processes (real uvicorn), a private redis-server, and robots.

Used by the upgrade/outage tests and by `scripts/bench_swap.py`, so the benchmark measures exactly what the
tests check. Everything started here is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

from service.canary import routes_to_canary
from tests.helpers import free_port


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


class PrivateRedis:
    """A redis-server of our own, so a test may kill its clients and restart it; the RDB in `workdir`
    carries the registry across a restart."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def cli(self, *args: str) -> str:
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--dbfilename",
                "dump.rdb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: self.cli("ping") == "PONG", 10, f"redis-server on {self.port}")

    def restart(self, down_seconds: float) -> None:
        """Save, shut down, stay down `down_seconds`, start again from the dump."""
        self.cli("shutdown", "save")
        if self.proc is not None:
            self.proc.wait(10)
        time.sleep(down_seconds)
        self.start()

    def kill_clients(self, name_prefix: str) -> int:
        """CLIENT KILL every connection whose name starts with `name_prefix` (the replicas' ones)."""
        ids = [
            line.split("id=")[1].split()[0]
            for line in self.cli("client", "list").splitlines()
            if f" name={name_prefix}" in line
        ]
        for client_id in ids:
            self.cli("client", "kill", "id", client_id)
        return len(ids)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/readyz", timeout=2).json())


@contextlib.contextmanager
def replicas(
    n: int, registry: str, prefix: str, workdir: Path, *, poll_seconds: float = 0.5, **env: str
) -> Iterator[list[Replica]]:
    """Start `n` replicas (`qipo serve`: uvicorn, 1 ORT thread) and wait until each serves a model."""
    started: list[Replica] = []
    try:
        for i in range(n):
            port = free_port()
            log = workdir / f"replica{i}.log"
            environ = {
                **os.environ,
                "QIPO_REGISTRY": registry,
                "QIPO_REGISTRY_PREFIX": prefix,
                "QIPO_CACHE_DIR": str(workdir / f"cache{i}"),
                "QIPO_REGISTRY_POLL_SECONDS": str(poll_seconds),
                "QIPO_LOG_LEVEL": "warning",
                **env,
            }
            cmd = [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--port",
                str(port),
            ]  # JSON logs, as deployed
            proc = subprocess.Popen(cmd, env=environ, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            started.append(Replica(f"http://127.0.0.1:{port}", proc, log))
        for rep in started:
            _wait(
                lambda r=rep: r.proc.poll() is None and r.ready().get("ready") is True,
                60,
                f"replica {rep.url} (log: {rep.log})",
            )
        yield started
    finally:
        for rep in started:
            if rep.proc.poll() is None:
                rep.proc.send_signal(signal.SIGINT)
        for rep in started:
            try:
                rep.proc.wait(10)
            except subprocess.TimeoutExpired:
                rep.proc.kill()
                rep.proc.wait(5)


@dataclass
class Observation:
    robot: str
    episode: int
    step: int
    sent: float
    received: float
    status: int  # 0 = transport error
    version: int | None
    replica: int
    # pinned version not on the replica that answered (503 "not yet" once nginx's retries ran out, or 409),
    # sent again before `status`
    conflicts: int = 0


@dataclass
class FleetResult:
    observations: list[Observation] = field(default_factory=list)
    moves: list[tuple[float, str, int | None]] = field(default_factory=list)  # (time, alias, to_version)

    @property
    def failed(self) -> list[Observation]:
        return [o for o in self.observations if o.status != 200]


class RawClient:
    """A minimal HTTP/1.1 keep-alive client (one connection per robot).

    httpx costs milliseconds of CPU per request; with 32 robots in one process the load generator, not the
    server, would set the latency. This writes the request and reads `Content-Length` bytes, nothing more.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict[str, object], timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._post(path, orjson.dumps(body)), timeout)
        except BaseException:
            await self.close()
            raise

    async def _post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status_line, *headers = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        length = next(int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length:"))
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def robot(
    name: str,
    url: str,
    replica: int,
    stop_at: float,
    out: list[Observation],
    *,
    episode_steps: int = 20,
    period: float = 0.01,
    pin: bool = True,
    resend_conflicts: int = 0,
    stop: asyncio.Event | None = None,
) -> None:
    """A controller: episodes of `episode_steps` requests at ~1/period Hz, its version pinned per episode.

    Behind a balancer without affinity, a pinned request can reach a replica that has not loaded that
    version yet: it answers 503 with Retry-After, which nginx retries on another replica, so the robot sees
    it only when every try hit a lagging replica. `resend_conflicts` > 0 sends such a
    pinned request again, up to that many times, one period apart.
    Stops at `stop_at` or when `stop` is set, after finishing the episode it is in."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    raw = RawClient(url)
    episode = 0
    while time.monotonic() < stop_at and not (stop is not None and stop.is_set()):
        version: int | None = None
        for step in range(episode_steps):
            body: dict[str, object] = {"state": rng.uniform(-1, 1, 3).tolist(), "robot_id": name}
            if pin and version is not None:
                body["model"] = str(version)
            sent = time.monotonic()
            conflicts = 0
            while True:
                try:
                    status, payload = await raw.post_json("/act", body)
                    got = orjson.loads(payload).get("version") if status == 200 else None
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    status, got = 0, None
                if status not in (409, 503) or "model" not in body or conflicts >= resend_conflicts:
                    break
                conflicts += 1
                await asyncio.sleep(period)
            received = time.monotonic()
            out.append(Observation(name, episode, step, sent, received, status, got, replica, conflicts))
            if version is None:
                version = got
            await asyncio.sleep(period)
        episode += 1
    await raw.close()


def canary_robots(robots: list[str], share: float, model: str, canary_version: int) -> set[str]:
    return {r for r in robots if routes_to_canary(r, share, model, canary_version)}


def check_fleet(
    result: FleetResult,
    robots: list[str],
    canary_set: set[str],
    canary_version: int | None,
    propagation_seconds: float = 2.0,
) -> dict[str, int]:
    """Assert the upgrade guarantees on what the robots observed; return the counts.

    A change of version between two episode starts must have a promotion between them (allowing
    `propagation_seconds` for replicas to swap), canary robots never change (the canary did not move), and
    no episode mixes versions.
    """
    assert not result.failed, f"{len(result.failed)} failed requests, first: {result.failed[:3]}"
    move_times = [t for t, alias, _ in result.moves if alias == "production"]
    by_robot: dict[str, list[Observation]] = {r: [] for r in robots}
    for o in result.observations:
        by_robot[o.robot].append(o)
    changes_total = mixed_episodes = 0
    for r, obs in by_robot.items():
        obs.sort(key=lambda o: o.sent)
        episodes: dict[int, set[int | None]] = {}
        for o in obs:
            episodes.setdefault(o.episode, set()).add(o.version)
        mixed = [e for e, vs in episodes.items() if len(vs) > 1]
        mixed_episodes += len(mixed)
        starts = [o for o in obs if o.step == 0]
        for a, b in itertools.pairwise(starts):
            if a.version == b.version:
                continue
            changes_total += 1
            assert r not in canary_set, f"canary robot {r} moved {a.version}->{b.version}; canary never moved"
            assert any(a.sent - propagation_seconds <= t <= b.received for t in move_times), (
                f"robot {r} changed {a.version}->{b.version} between {a.sent:.3f} and {b.received:.3f} "
                f"with no promotion in between (promotions at {move_times})"
            )
        if r in canary_set:
            assert {o.version for o in obs} == {canary_version}, (
                f"canary robot {r} saw { ({o.version for o in obs}) }"
            )
    assert mixed_episodes == 0, f"{mixed_episodes} episodes mixed two versions"
    return {
        "requests": len(result.observations),
        "failed": len(result.failed),
        "conflicts_resent": sum(o.conflicts for o in result.observations),
        "robots": len(robots),
        "canary_robots": len(canary_set),
        "episodes": sum(len({o.episode for o in obs}) for obs in by_robot.values()),
        "mixed_episodes": mixed_episodes,
        "version_changes": changes_total,
        "promotions": len(move_times),
    }


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
