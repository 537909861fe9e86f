"""`docker compose up` for real: docker-compose.yml built and started under a Docker engine, then checked.

Starts an engine (scripts/docker-engine.sh) when `docker info` does not answer, builds every image of the
default `docker compose up` (no profile: Grafana and the GPU replica stay out), starts them under a project
name of its own with the published ports on 127.0.0.1, and checks that
- every service is healthy (the publisher exited 0);
- `/act` answers through the balancer from both replicas;
- Prometheus has both replicas up;
- robots acting through the balancer see publish → promote → rollback with no failed request and no
  episode mixing versions (each robot pins the version of its episode, as docs/upgrades.md says).
`docker compose down -v` runs whatever happens; an engine this test started is stopped again. The closing
lines give the numbers (also written to build/compose-test/summary.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.fleet import FleetResult, Observation, check_fleet, robot
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build/compose-test"
MODEL = "pendulum-qipo"
REPLICAS = 2
ROBOTS = 16
EPISODE_STEPS = 5
# Load phase: robots start, then publish (version 2), promote it, roll back, each move followed by SETTLE_S
# of load; robots finish their episode after the last one. LOAD_CAP_S bounds the whole phase.
SETTLE_S = 10.0
LOAD_CAP_S = 300.0
# A robot's version may change between a move's start and its end plus this much (the replicas' swap, and
# how far one replica lags the other on a busy host).
PROPAGATION_S = 5.0
# A pinned request that reaches a replica which has not loaded that version yet is answered 503 with
# Retry-After, which nginx retries on the other replica; when every try lands on a lagging one, robots send
# it again (counted as `conflicts_resent`), so an episode never changes version.
RESEND_CONFLICTS = 200

T = TypeVar("T")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, log: str | None = None) -> str:
    """Run a command from the repository root; raise with the tail of its output (and log file) on failure."""
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    output = proc.stdout + proc.stderr
    if log is not None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / log).write_text(output)
    if proc.returncode != 0:
        where = f" (full output: {OUT / log})" if log else ""
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}{where}:\n{output[-4000:]}")
    return proc.stdout


def answers(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """A Docker engine with Compose v2: the running one, else one started by scripts/docker-engine.sh
    (Debian's dockerd plus local stand-ins for images that cannot be pulled), stopped again at the end.
    Yields how it was had, for the closing lines."""
    started = False
    how = "already running"
    if not (answers("docker", "info") and answers("docker", "compose", "version")):
        started = not answers("docker", "info")
        t0 = time.monotonic()
        run(["bash", "scripts/docker-engine.sh", "up", str(ROOT)], timeout=1800, log="engine-up.log")
        how = f"set up by scripts/docker-engine.sh in {time.monotonic() - t0:.1f} s"
    try:
        yield how
    finally:
        if started and not os.environ.get("QIPO_KEEP_ENGINE"):
            run(["bash", "scripts/docker-engine.sh", "down"], timeout=120)


@dataclass
class Stack:
    engine: str
    env: dict[str, str]
    lb: str
    prometheus: str
    timings: dict[str, float]

    def compose(self, *args: str, timeout: float = 120, log: str | None = None) -> str:
        return run(["docker", "compose", *args], env=self.env, timeout=timeout, log=log)

    def ps(self) -> list[dict[str, Any]]:
        text = self.compose("ps", "--all", "--format", "json").strip()
        if text.startswith("["):  # older Compose prints one array, newer one object per line
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_until(
    check: Callable[[], T | None], seconds: float, what: str, detail: Callable[[], str] = str
) -> T:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s. {detail()}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def stack(engine: str) -> Iterator[Stack]:
    """`docker compose build` + `up -d` of the default services; `down -v` whatever happens."""
    lb_port, prom_port = free_port(), free_port()
    env = os.environ | {
        "COMPOSE_PROJECT_NAME": f"qipo-e2e-{uuid.uuid4().hex[:8]}",
        "BIND_HOST": "127.0.0.1",
        "LB_PORT": str(lb_port),
        "PROMETHEUS_PORT": str(prom_port),
        "API_REPLICAS": str(REPLICAS),
        "QIPO_MODEL_NAME": MODEL,
        "QIPO_MODEL_REF": "production",
        "QIPO_ADMIN_TOKEN": "",
    }
    env.pop("COMPOSE_PROFILES", None)
    stack = Stack(engine, env, f"http://127.0.0.1:{lb_port}", f"http://127.0.0.1:{prom_port}", {})
    try:
        t0 = time.monotonic()
        stack.compose("build", timeout=3000, log="build.log")
        stack.timings["build_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        stack.compose("up", "-d", timeout=600, log="up.log")
        stack.timings["up_s"] = time.monotonic() - t0
        yield stack
    finally:
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            logs = subprocess.run(
                ["docker", "compose", "logs", "--no-color", "--timestamps"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            (OUT / "services.log").write_text(logs.stdout + logs.stderr)
        finally:
            down = ["docker", "compose", "down", "-v", "--remove-orphans", "--timeout", "10"]
            run(down, env=env, timeout=300)


def healthy(stack: Stack) -> dict[str, str] | None:
    """service → state once every container is healthy (the publisher: exited 0); None while starting.
    Raises at once when a container has failed, so a broken service is reported without waiting."""
    states: dict[str, str] = {}
    for c in stack.ps():
        name, state, health = c["Service"], c["State"], c.get("Health", "")
        if name == "publisher":
            if state == "exited" and c.get("ExitCode") != 0:
                logs = stack.compose("logs", "publisher")
                raise AssertionError(f"publisher exited {c.get('ExitCode')}: {logs[-3000:]}")
            ok = state == "exited"
        else:
            if health == "unhealthy" or state in ("exited", "dead"):
                logs = stack.compose("logs", name)
                raise AssertionError(f"{c['Name']} is {state}/{health}: {logs[-3000:]}")
            ok = health == "healthy"
        if not ok:
            return None
        states[c["Name"]] = f"{state}/{health}" if health else f"{state} (exit {c.get('ExitCode')})"
    services = Counter(c["Service"] for c in stack.ps())
    expected = {"redis": 1, "publisher": 1, "api": REPLICAS, "lb": 1, "prometheus": 1}
    assert services == expected, f"the default `docker compose up` ran {dict(services)}, not {expected}"
    return states


def act(client: httpx.Client, url: str, robot_id: str) -> tuple[int, str]:
    reply = client.post(f"{url}/act", json={"state": [1.0, 0.0, 0.0], "robot_id": robot_id}, timeout=10)
    assert reply.status_code == 200, f"/act through the balancer: {reply.status_code} {reply.text[:300]}"
    body = reply.json()
    assert len(body["action"]) == 1 and -2.0 <= body["action"][0] <= 2.0, body
    return int(body["version"]), reply.headers["x-upstream"]


def prometheus_up(stack: Stack) -> dict[str, str] | None:
    query = urllib.parse.urlencode({"query": 'up{job="qipo-api"}'})
    data = httpx.get(f"{stack.prometheus}/api/v1/query?{query}", timeout=5).json()["data"]["result"]
    up = {r["metric"]["instance"]: r["value"][1] for r in data}
    return up if len(up) == REPLICAS and all(v == "1" for v in up.values()) else None


async def upgrade_under_load(stack: Stack) -> tuple[FleetResult, list[dict[str, Any]], float]:
    """ROBOTS robots through the balancer while version 2 is published, promoted and rolled back with the
    CLI inside the stack, as an operator would; returns what they saw, the moves and the load seconds."""
    result = FleetResult()
    out: list[Observation] = []
    moves: list[dict[str, Any]] = []
    start = time.monotonic()
    stop = asyncio.Event()
    robots = [
        asyncio.create_task(
            robot(f"robot-{i:02d}", stack.lb, 0, start + LOAD_CAP_S, out, episode_steps=EPISODE_STEPS,
                  resend_conflicts=RESEND_CONFLICTS, stop=stop)
        )
        for i in range(ROBOTS)
    ]  # fmt: skip
    qipo = ["exec", "-T", "api", "qipo", "registry"]
    steps = [
        ("publish", ["run", "--rm", "--no-deps", "--entrypoint", "qipo", "publisher", "registry", "publish",
                     "/opt/qipo/demo"]),
        ("promote", [*qipo, "promote", MODEL, "2", "--alias", "production"]),
        ("rollback", [*qipo, "rollback", MODEL, "--alias", "production"]),
    ]  # fmt: skip
    try:
        for what, args in steps:
            await asyncio.sleep(SETTLE_S)
            t0 = time.monotonic()
            output = await asyncio.to_thread(stack.compose, *args)
            took = time.monotonic() - t0
            moves.append({"move": what, "t": round(t0 - start, 2), "took_s": round(took, 2),
                          "output": output.strip()[-200:]})  # fmt: skip
            if what != "publish":
                result.moves.append((t0, "production", None))
        await asyncio.sleep(SETTLE_S)
    finally:
        stop.set()
        await asyncio.gather(*robots)
    result.observations = out
    return result, moves, time.monotonic() - start


def test_docker_compose_up_serves_and_upgrades_under_load(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    states = wait_until(
        lambda: healthy(stack), 300, "every service healthy", lambda: json.dumps(stack.ps(), indent=1)[-3000:]
    )
    stack.timings["healthy_s"] = stack.timings["up_s"] + time.monotonic() - t0

    with httpx.Client() as client:
        seen = [act(client, stack.lb, f"probe-{i}") for i in range(40)]
    upstreams = Counter(u for _, u in seen)
    assert {v for v, _ in seen} == {1}, f"the publisher should have published version 1: {seen[:5]}"
    assert len(upstreams) == REPLICAS, f"nginx sent /act to {dict(upstreams)}, not to {REPLICAS} replicas"

    targets = wait_until(
        lambda: prometheus_up(stack), 90, f"Prometheus up{{job='qipo-api'}} == 1 for {REPLICAS} replicas"
    )

    result, moves, load_s = asyncio.run(upgrade_under_load(stack))
    versions = Counter(o.version for o in result.observations)
    latencies = sorted(o.received - o.sent for o in result.observations)
    summary: dict[str, Any] = {
        "engine": stack.engine,
        **{k: round(v, 1) for k, v in stack.timings.items()},
        "builder": "classic" if os.environ.get("DOCKER_BUILDKIT") == "0" else "BuildKit",
        "demo_train_flags": os.environ.get("DEMO_TRAIN_FLAGS", ""),
        "services": states,
        "upstreams": dict(upstreams),
        "prometheus_up": targets,
        "robots": ROBOTS,
        "load_s": round(load_s, 1),
        "moves": moves,
        "requests": len(latencies),
        "failed": len(result.failed),
        "conflicts_resent": sum(o.conflicts for o in result.observations),
        "rps": round(len(latencies) / load_s, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "versions_seen": {str(k): n for k, n in sorted(versions.items(), key=lambda kv: str(kv[0]))},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))  # kept when a check below fails

    names = sorted({o.robot for o in result.observations})
    propagation = max(m["took_s"] for m in moves) + PROPAGATION_S
    counts = check_fleet(result, names, set(), canary_version=None, propagation_seconds=propagation)
    last = {o.robot: o.version for o in sorted(result.observations, key=lambda o: o.sent)}
    assert set(versions) == {1, 2}, f"robots saw versions {dict(versions)}, expected 1 and 2"
    assert set(last.values()) == {1}, f"after the rollback every robot must be back on version 1: {last}"
    assert counts["version_changes"] >= len(names), counts  # every robot moved 1 → 2 (→ 1)
    summary.update(counts)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"compose: engine {stack.engine}; build {summary['build_s']} s ({summary['builder']} builder, "
        f"demo flags "
        f"{summary['demo_train_flags'] or 'none'}), up {summary['up_s']} s, "
        f"all healthy at {summary['healthy_s']} s",
        f"compose: /act through nginx from {len(upstreams)} replicas {dict(upstreams)}; "
        f"Prometheus up: {len(targets)}",
        f"compose upgrade under load: {counts['requests']} requests, {counts['failed']} failed, "
        f"{counts['mixed_episodes']} mixed episodes, {counts['conflicts_resent']} pinned misses resent; "
        f"{ROBOTS} robots for {summary['load_s']} s, {summary['rps']} req/s, "
        f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms; versions seen {summary['versions_seen']}",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
