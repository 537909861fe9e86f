"""The ASGI app called directly: no sockets, no uvicorn, no scheduler. Each app (the floor included) runs in
a child process of its own (its own `service` package), one request at a time and then 64 at once on
uvloop, and reports thread CPU µs per request, so other jobs on the box barely move the number."""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.loadgen import CHILD, ROOT, child_env, requests_bytes
from loadtests.sampler import time_call
from loadtests.serve_profile import (
    MEASURED_FRAME,
    PROFILE_RATE,
    STARTUP_FRAMES,
    keep_stacks,
    py_spy,
    summarize_profile,
)

INPROC_REQUESTS = 3000  # per concurrency level (--inproc-requests)
# name -> (kind of record, arch, executor, where `service` is imported from)
Spec = tuple[str, str | None, str | None, Path]


def asgi_caller(app: Any, kind: str) -> Callable[[int], Awaitable[None]]:
    """`one(i)`: POST the i-th benchmark body to `app` through the ASGI interface; fails unless 200."""
    bodies = [r.split(b"\r\n\r\n", 1)[1] for r in requests_bytes()]
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
    }
    base |= {"scheme": "http", "path": "/act", "raw_path": b"/act", "query_string": b"", "root_path": ""}
    base |= {"client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}

    async def one(i: int) -> None:
        body = bodies[i % len(bodies)]
        scope = {**base, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        status = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"{kind}: /act answered {status}")

    return one


class OnnxClock:
    """Thread CPU spent inside the served model's ONNX calls, counted by wrapping its `run`."""

    def __init__(self) -> None:
        self.ns = 0

    def timed(self, run: Callable[..., Any]) -> Callable[..., Any]:
        def timed_run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return run(*args, **kwargs)
            finally:
                self.ns += time.thread_time_ns() - t0

        return timed_run

    def attach(self, policy: Any) -> None:
        """Time `policy`'s session calls: its compiled `_run` when it calls that, else `session.run`."""
        if getattr(policy, "_run", None) is not None:
            policy._run = self.timed(policy._run)
        else:
            policy.session = _TimedSession(policy.session, self.timed(policy.session.run))


class _TimedSession:
    """An ORT session whose `run` is timed (for a `service` that calls `session.run`)."""

    def __init__(self, session: Any, run: Callable[..., Any]) -> None:
        self.session = session
        self.run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def served_policy(app: Any) -> Any:
    """The model the app serves (an app built by an older `service` keeps its manager on the state)."""
    state = app.state
    manager = state.services.manager if hasattr(state, "services") else state.manager
    return manager.current.policy


async def run_levels(
    one: Callable[[int], Awaitable[None]], clock: OnnxClock, requests: int, levels: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Thread CPU µs per request (and the ONNX part of it) at each concurrency level, after a warm-up."""
    out: dict[str, dict[str, float]] = {"us_per_req": {}, "onnx_us_per_req": {}}
    for clients in levels:
        for i in range(200):  # warm-up
            await one(i)
        clock.ns = 0
        t0 = time.thread_time_ns()
        if clients == 1:
            for i in range(requests):
                await one(i)
        else:
            for start in range(0, requests, clients):
                await asyncio.gather(*(one(i) for i in range(start, start + clients)))
        out["us_per_req"][str(clients)] = (time.thread_time_ns() - t0) / 1e3 / requests
        out["onnx_us_per_req"][str(clients)] = clock.ns / 1e3 / requests
    return out


def sampler_in_process(policy: Any, levels: tuple[int, ...]) -> dict[str, float]:
    """The served sampler alone, µs per row at each level's batch, right after the app: the same moment of
    the box."""
    out = {}
    rng = np.random.default_rng(0)
    for rows in levels:
        state = rng.standard_normal((rows, policy.obs_dim), dtype=np.float32)
        noise = rng.standard_normal((rows, policy.noise_dim), dtype=np.float32)

        def graph(s: np.ndarray = state, n: np.ndarray = noise) -> object:
            return policy.run(s, n)

        ms = time_call(graph, 300 if rows == 1 else 60)
        out[str(rows)] = ms * 1e3 / rows
    return out


def asgi_cost(kind: str, registry: str, cache: str, requests: int, levels: tuple[int, ...] = (1, 64)) -> None:
    """Child process: CPU µs per /act request of the ASGI app itself, called directly on uvloop, one at a
    time and 64 at once; prints JSON. Thread CPU time, so other jobs on the box do not inflate it."""
    import uvloop

    from loadtests.floor import bench_app

    app = bench_app(kind, registry, cache, follow_registry=False)
    one = asgi_caller(app, kind)
    clock = OnnxClock()
    timed = kind != "floor" and levels == (1, 64)  # not under the profiler, whose stacks it would blur

    async def measure() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            policy = served_policy(app) if timed else None
            if timed:
                clock.attach(policy)
            gc.collect()
            gc.freeze()
            out: dict[str, Any] = await run_levels(one, clock, requests, levels)
            if timed and hasattr(policy, "noise_dim"):
                out["sampler_us_per_row"] = sampler_in_process(policy, levels)
        return out

    print(json.dumps(uvloop.run(measure())))


def child_json(name: str, command: list[str], src: Path) -> dict[str, Any]:
    """Run a bench child with `src` on the path; its last stdout line is JSON."""
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(src),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"in-process run of {name} failed: {proc.stderr.strip()[-500:]}")
    last = next(
        line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")
    )  # py-spy talks too
    return dict(json.loads(last))


def inproc_apps(specs: dict[str, Spec]) -> dict[str, Spec]:
    """The floor and every inline server (the executor does not change the in-process cost)."""
    every: dict[str, Spec] = {"floor": ("floor", None, None, ROOT), **specs}
    return {name: spec for name, spec in every.items() if name == "floor" or name.endswith(":inline")}


def inproc_costs(
    specs: dict[str, Spec],
    tmp: Path,
    profile_dir: Path | None = None,
    requests: int = INPROC_REQUESTS,
    repeats: int = 1,
) -> dict[str, Any]:
    """`asgi_cost` for the floor and every inline qipo server, each in its own process (its own `service`).

    `repeats` > 1 runs every app that many times, in turn (floor, app, app, …, floor, app, …), so that a
    shared box's drifting load hits all of them alike, and keeps the median of each number; `runs` holds
    every run's. With `profile_dir`, one more run per app, one request at a time, under py-spy: the 1-client
    path without sockets, whose stacks go to serve-profile-inproc-<app>.collapsed and its table to `profile`.
    """
    apps = inproc_apps(specs)

    def command(name: str, arch: str | None) -> list[str]:
        kind = "floor" if name == "floor" else "qipo"
        registry, cache = tmp / f"registry-{arch}", tmp / f"inproc-{name}"
        return [sys.executable, str(CHILD), "asgi", kind, str(registry), str(cache), str(requests)]

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
    for _ in range(repeats):
        for name, (_, arch, _, src) in apps.items():
            runs[name].append(child_json(name, command(name, arch), src))
    out: dict[str, Any] = {}
    for name, (_, arch, _, src) in apps.items():
        out[name] = {"model": arch, "runs": runs[name], **medians(runs[name])}
        if profile_dir is not None:
            raw = profile_dir / f"serve-profile-inproc-{name.replace(':', '-')}.collapsed"
            spy = [py_spy(), "record", "--rate", str(PROFILE_RATE), "--format", "raw", "--function"]
            one = child_json(name, [*spy, "-o", str(raw), "--", *command(name, arch), "1"], src)
            keep_stacks(raw, MEASURED_FRAME, STARTUP_FRAMES)
            out[name]["profile"] = summarize_profile(raw, one["us_per_req"]["1"])
            out[name]["profile"]["requests"] = requests
    return out


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per measured key, the median over runs at each level."""
    return {
        key: {c: statistics.median(run[key][c] for run in runs) for c in runs[0][key]}
        for key in ("us_per_req", "onnx_us_per_req", "sampler_us_per_row")
        if key in runs[0]
    }
