"""`make bench-serve`: the real server against a no-model floor, in one run, on loopback; plus the fused
ONNX sampler against torch eager.

- floor: a FastAPI app with the same route, body parsing (orjson) and reply shape, but no model, no
  validation and no batching: what this box can answer at all with FastAPI + uvicorn.
- qipo: `service.app.create_app` serving a published artifact (micro-batcher, validation, metrics).
Both run under real uvicorn (uvloop + httptools, no access log) in their own process; the load generator
is a raw-socket asyncio client with N keep-alive connections, each sending the next request as soon as the
last reply arrived (closed loop), for a bounded time per level.

Writes docs/bench/serve.json, serve.md and serve.png. Ratios are against the floor of the same run, so
they hold on other boxes even where absolute numbers do not. torch is used here only (never in service/).

`--profile` adds one more 1-client level per server with py-spy (a sampling profiler outside the server
process: no instrumentation inside it, so small functions are not inflated) attached to the server, and
writes serve-profile-run.md (top-N functions and packages by CPU µs per request) plus the collapsed stacks
(serve-profile-<server>.collapsed, flame-graph input) next to the results. The profiled level is extra:
the recorded numbers of the table never run under the profiler.

`--inproc-only` skips the sockets: only the in-process part (each app called directly, thread CPU time) and
the ONNX sampler at batch 1 and 64, written to serve-inproc.md / serve-inproc.json (and, with `--profile`,
serve-profile-inproc-run.md): cheap enough to measure one change at a time on a shared box, and robust to
other load. `--inproc-requests N` sets how many requests each in-process level runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

ROOT = Path(__file__).resolve().parents[1]
MODEL = "pendulum-qipo"
NOTES = """## How to read this

- Every number comes from one run: the floor and each server are loaded in turn at each client count, so
  drift of the box hits all of them alike. On a box shared with other jobs, wall-clock req/s and latency
  move by ±50% between runs; **server CPU µs/req** (user + system time of the server process, threads
  included, over the measured window ÷ requests answered) does not depend on how much CPU the server was
  given, so it is the column to compare across runs and boxes.
- `mean batch` is rows per ONNX call from the server's own `qipo_batch_size` histogram. The batcher
  flushes at the end of the event-loop tick (no fixed wait), so batches grow with load by themselves.
- **overhead µs/req** = server CPU µs/req − the floor's CPU µs/req at the same client count − the
  sampler's µs per row at the measured mean batch (ONNX alone, interpolated between the batches of the
  sampler table's run): what the serving code costs beyond FastAPI + uvicorn and the model.
- Goals (issues 6 and 14): overhead ≤ 60 µs/req at 1 client and ≤ 15 µs/req at 64; at 1 client p50 ≤
  floor p50 + 1.2× the sampler's batch-1 time; at 64 clients req/s ≥ 0.7× the floor's for `default`
  and ≥ 0.85× for `small`, p99 ≤ 1.5× the floor's; ONNX ≥ 3× torch eager at batch 1.
- `baseline` rows (only with `--baseline DIR`) serve the same model with another source tree's `service`
  package, measured in the same run.
- `default` is the network `qipo train` exports by default; `small` (64 wide) is ~4× cheaper per row
  and isolates the serving overhead from the model's compute."""
GOAL_WORD = {True: "met", False: "NOT met", None: "not measured"}
SAMPLER_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # ONNX: the overhead column interpolates between them
TORCH_BATCHES = (1, 64, 256)
# Issue 14: req/s at 64 clients ÷ the floor's, per architecture.
RPS_64_GOAL = {"default": 0.7, "small": 0.85}
OVERHEAD_GOAL_US = {1: 60.0, 64: 15.0}
ARCHS = {  # name -> (hidden, blocks, steps)
    "default": (128, 2, 10),  # QIPOConfig defaults (NetworkConfig hidden/blocks, 10 Euler steps)
    "small": (64, 2, 10),  # ~4x cheaper per row than default: shows the serving overhead itself
}


# ----- servers (run in child processes) --------------------------------------------------------------
def floor_app() -> Any:
    app = FastAPI()
    timing = {"queue_ms": 0.0, "infer_ms": 0.0, "total_ms": 0.0}

    @app.post("/act")
    async def act(request: Request) -> Response:
        body = orjson.loads(await request.body())
        reply = {
            "model": MODEL,
            "version": 1,
            "clipped": False,
            "timing": timing,
            "request_id": body.get("request_id"),
            "action": [0.0] * 1,
        }
        return Response(orjson.dumps(reply), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(kind: str, port: int, registry: str, cache: str, executor: str) -> None:
    import gc

    import uvicorn

    if kind == "floor":
        app = floor_app()
        gc.collect()
        gc.freeze()  # same start-up treatment as the real server
    else:
        from service.app import create_app
        from service.settings import ServeSettings

        app = create_app(
            ServeSettings.model_validate(
                {"registry": registry, "cache_dir": cache, "model_name": MODEL, "batch_executor": executor}
            )
        )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


# ----- in process: the ASGI app called directly (no sockets, no uvicorn, no scheduler) ---------------
INPROC_REQUESTS = 3000  # per concurrency level (--inproc-requests)


def asgi_cost(kind: str, registry: str, cache: str, requests: int, levels: tuple[int, ...] = (1, 64)) -> None:
    """Child process: CPU µs per /act request of the ASGI app itself, called directly on uvloop, one at a
    time and 64 at once; prints JSON. Thread CPU time, so other jobs on the box do not inflate it."""
    import gc

    import uvloop

    if kind == "floor":
        app = floor_app()
    else:
        from service.app import create_app
        from service.settings import ServeSettings

        app = create_app(
            ServeSettings.model_validate(
                {"registry": registry, "cache_dir": cache, "model_name": MODEL, "follow_registry": False}
            )
        )
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

    onnx_ns = [0]

    def timed(run: Any) -> Any:
        """An ORT `run`, counting the thread CPU it takes inside the request path."""

        def timed_run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return run(*args, **kwargs)
            finally:
                onnx_ns[0] += time.thread_time_ns() - t0

        return timed_run

    class TimedSession:
        """The server's ORT session with a timed `run` (for a `service` that calls `session.run`)."""

        def __init__(self, session: Any) -> None:
            self.session = session
            self.run = timed(session.run)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.session, name)

    async def measure() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {"us_per_req": {}, "onnx_us_per_req": {}}
        async with app.router.lifespan_context(app):
            if kind != "floor" and levels == (1, 64):  # not under the profiler, whose stacks it would blur
                policy = (
                    app.state.services.manager.current.policy
                    if hasattr(app.state, "services")
                    else (app.state.manager.current.policy)
                )
                if getattr(policy, "_run", None) is not None:  # calls the session's compiled run
                    policy._run = timed(policy._run)
                else:
                    policy.session = TimedSession(policy.session)
            gc.collect()
            gc.freeze()
            for clients in levels:
                for i in range(200):  # warm-up
                    await one(i)
                onnx_ns[0] = 0
                t0 = time.thread_time_ns()
                if clients == 1:
                    for i in range(requests):
                        await one(i)
                else:
                    for start in range(0, requests, clients):
                        await asyncio.gather(*(one(i) for i in range(start, start + clients)))
                out["us_per_req"][str(clients)] = (time.thread_time_ns() - t0) / 1e3 / requests
                out["onnx_us_per_req"][str(clients)] = onnx_ns[0] / 1e3 / requests
            if kind != "floor" and levels == (1, 64) and hasattr(policy, "noise_dim"):
                # The sampler alone, in this process, right after the app: the same moment of the box.
                out["sampler_us_per_row"] = {}
                rng = np.random.default_rng(0)
                for rows in levels:
                    state = rng.standard_normal((rows, policy.obs_dim), dtype=np.float32)
                    noise = rng.standard_normal((rows, policy.noise_dim), dtype=np.float32)
                    ms = time_call(lambda s=state, n=noise: policy.run(s, n), 300 if rows == 1 else 60)
                    out["sampler_us_per_row"][str(rows)] = ms * 1e3 / rows
        return out

    print(json.dumps(uvloop.run(measure())))


def inproc_costs(
    specs: dict[str, tuple[str, str | None, str | None, Path]],
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
    apps = {
        name: spec
        for name, spec in {"floor": ("floor", None, None, ROOT), **specs}.items()
        if name == "floor" or name.endswith(":inline")  # the executor does not change the in-process cost
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in apps}
    for _ in range(repeats):
        for name, (_, arch, _, src) in apps.items():
            kind = "floor" if name == "floor" else "qipo"
            command = [sys.executable, __file__, "_asgi", kind, str(tmp / f"registry-{arch}")]
            command += [str(tmp / f"inproc-{name}"), str(requests)]
            runs[name].append(_child_json(name, command, src))
    out: dict[str, Any] = {}
    for name, (_, arch, _, src) in apps.items():
        out[name] = {"model": arch, "runs": runs[name]}
        for key in ("us_per_req", "onnx_us_per_req", "sampler_us_per_row"):
            if key not in runs[name][0]:
                continue
            out[name][key] = {
                c: statistics.median(run[key][c] for run in runs[name]) for c in runs[name][0][key]
            }
        kind = "floor" if name == "floor" else "qipo"
        command = [sys.executable, __file__, "_asgi", kind, str(tmp / f"registry-{arch}")]
        command += [str(tmp / f"inproc-{name}"), str(requests)]
        if profile_dir is not None:
            raw = profile_dir / f"serve-profile-inproc-{name.replace(':', '-')}.collapsed"
            spy = [
                py_spy(),
                "record",
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "--function",
                "-o",
                str(raw),
            ]
            one = _child_json(name, [*spy, "--", *command, "1"], src)
            keep_stacks(raw, MEASURED_FRAME, STARTUP_FRAMES)
            out[name]["profile"] = summarize_profile(raw, one["us_per_req"]["1"])
            out[name]["profile"]["requests"] = requests
    return out


# The in-process child's stacks without its start-up (imports, app and model loading, warm-up of the model):
# the requests, including the flushes the event loop runs outside any request's task.
MEASURED_FRAME = ";run (uvloop/"
STARTUP_FRAMES = (";_find_and_load (", "lifespan (")


def keep_stacks(raw: Path, within: str, without: tuple[str, ...]) -> None:
    """Rewrite collapsed stacks keeping those that contain `within` and none of `without`."""
    lines = raw.read_text().splitlines()
    kept = [line for line in lines if within in f";{line}" and not any(f in f";{line}" for f in without)]
    raw.write_text("\n".join(kept) + "\n")


def _child_json(name: str, command: list[str], src: Path) -> dict[str, Any]:
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


def child_env(src: Path) -> dict[str, str]:
    """This environment with `src` first on PYTHONPATH (kept after it: wheels installed with --target)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    kind: str, registry: Path, cache: Path, executor: str, src: Path = ROOT
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server process; `src` is where its `service` package is imported from."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "_serve", kind, str(port), str(registry), str(cache), executor],
        cwd=ROOT,
        env=child_env(src),
    )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b"200 OK" in sock.recv(1024):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start on port {port}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----- load generator --------------------------------------------------------------------------------
def requests_bytes(n: int = 64) -> list[bytes]:
    """Pre-encoded POST /act requests (Pendulum-shaped states, no seed: what a robot sends)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        theta = rng.uniform(-np.pi, np.pi)
        body = orjson.dumps(
            {"state": [float(np.cos(theta)), float(np.sin(theta)), float(rng.uniform(-8, 8))]}
        )
        head = (
            f"POST /act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _worker(
    port: int, reqs: list[bytes], start: float, end: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            writer.write(reqs[i % len(reqs)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= start:  # after the warm-up
                lat.append(t1 - t0)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors.append(1)
    finally:
        writer.close()


async def load_with_cpu(
    pid: int, port: int, clients: int, warmup: float, duration: float
) -> tuple[dict[str, float], float]:
    """`load`, plus the server's CPU seconds spent during the measured window."""
    task = asyncio.ensure_future(load(port, clients, warmup, duration))
    await asyncio.sleep(warmup)
    start = cpu_seconds(pid)
    await asyncio.sleep(duration)
    end = cpu_seconds(pid)
    return await task, end - start


async def load(port: int, clients: int, warmup: float, duration: float) -> dict[str, float]:
    reqs = requests_bytes()
    lat: list[float] = []
    errors: list[int] = []
    now = time.perf_counter()
    start, end = now + warmup, now + warmup + duration
    await asyncio.gather(*(_worker(port, reqs, start, end, lat, errors) for _ in range(clients)))
    lat_ms = np.asarray(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": len(errors),
        "rps": len(lat) / duration,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far: a cost per request that holds even
    when other work shares the box and wall-clock req/s does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_batches(port: int) -> tuple[float, float]:
    """(sum, count) of qipo_batch_size from /metrics."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    total = count = 0.0
    for line in data.decode().splitlines():
        if line.startswith("qipo_batch_size_sum "):
            total = float(line.split()[1])
        elif line.startswith("qipo_batch_size_count "):
            count = float(line.split()[1])
    return total, count


# ----- sampler: ONNX vs torch eager --------------------------------------------------------------------
def build_artifact(out: Path, hidden: int, blocks: int, steps: int) -> Any:
    import torch

    from training.export import export_artifact
    from training.networks import VelocityNet
    from training.paths import make_path
    from training.policy import FlowPolicy, Normalizer

    torch.manual_seed(0)
    norm = Normalizer(np.zeros(3), np.ones(3), np.array([-2.0]), np.array([2.0]))
    policy = FlowPolicy(VelocityNet(3, 1, hidden, blocks, 32), norm, make_path("qipo-ot"), steps).eval()
    export_artifact(
        policy, out, name=MODEL, variant="qipo-ot", training_config={}, dataset={"name": "bench"}, scores={}
    )
    return policy


def time_call(fn: Any, repeats: int) -> float:
    """Median CPU ms of this thread per call: like the server's CPU µs/req, it does not grow when other
    jobs take the CPU away (wall time would, and the overhead column subtracts this from CPU time)."""
    for _ in range(max(3, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        fn()
        samples.append(time.thread_time_ns() - t0)
    return statistics.median(samples) / 1e6


def bench_sampler(
    policy: Any, artifact: Path, batches: tuple[int, ...] = SAMPLER_BATCHES, torch_too: bool = True
) -> list[dict[str, Any]]:
    import torch

    from service.runtime import OnnxPolicy

    torch.set_num_threads(1)
    onnx = OnnxPolicy.load(artifact, intra_threads=1)
    rows = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        state = rng.standard_normal((batch, 3), dtype=np.float32)
        noise = rng.standard_normal((batch, 1), dtype=np.float32)
        ts, tn = torch.from_numpy(state), torch.from_numpy(noise)
        repeats = 300 if batch == 1 else 40

        def eager(ts: Any = ts, tn: Any = tn) -> None:
            with torch.inference_mode():
                policy(ts, tn)

        onnx_ms = time_call(lambda s=state, n=noise: onnx.run(s, n), repeats)  # the graph alone
        row: dict[str, Any] = {"batch": batch, "onnx_ms": onnx_ms}
        if torch_too and batch in TORCH_BATCHES:
            torch_ms = time_call(eager, repeats)
            row |= {"torch_eager_ms": torch_ms, "speedup": torch_ms / onnx_ms}
        rows.append(row)
    return rows


def sampler_us_per_row(rows: list[dict[str, Any]], mean_batch: float) -> float:
    """The sampler's µs per row at a (fractional) mean batch, interpolated between measured batches."""
    ms = float(np.interp(mean_batch, [r["batch"] for r in rows], [r["onnx_ms"] for r in rows]))
    return ms * 1e3 / mean_batch


# ----- profile (py-spy) ------------------------------------------------------------------------------
PROFILE_RATE = 1000  # samples per second of server CPU


def py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[dev]'")
    return exe


async def load_profiled(
    pid: int, port: int, clients: int, warmup: float, duration: float, raw: Path
) -> tuple[dict[str, float], float]:
    """`load_with_cpu` with py-spy recording the server for the measured window (collapsed stacks, by
    function, only while the server runs on a CPU)."""
    task = asyncio.ensure_future(load(port, clients, warmup, duration))
    await asyncio.sleep(warmup)
    spy = await asyncio.create_subprocess_exec(
        *(py_spy(), "record", "--pid", str(pid), "--rate", str(PROFILE_RATE), "--duration"),
        *(str(max(1, int(duration))), "--format", "raw", "--function", "--nonblocking", "-o", str(raw)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    start = cpu_seconds(pid)
    await asyncio.sleep(duration)
    end = cpu_seconds(pid)
    _, err = await spy.communicate()
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed ({spy.returncode}): {err.decode().strip()[-300:]}")
    return await task, end - start


def short_frame(frame: str) -> tuple[str, str]:
    """py-spy's `func (path:line)` (paths relative to sys.path) → (the frame, its top-level package)."""
    path = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if path.startswith("<frozen"):
        return frame, "stdlib"
    top = path.split("/", 1)[0].removesuffix(".py")
    return frame, f"{top} (stdlib)" if top in sys.stdlib_module_names else top


def summarize_profile(
    raw: Path, cpu_us_per_req: float, top: int = 25, within: str | None = None, without: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Self and inclusive CPU µs per request per function, and self µs per package: each function's share
    of the samples times the server CPU µs/req measured over the same window (only the stacks that contain
    `within`, when given, and none of `without`)."""
    self_n: dict[str, int] = {}
    total_n: dict[str, int] = {}
    package_n: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if within is not None and within not in f";{stack}":
            continue
        if any(frame in f";{stack}" for frame in without):
            continue
        count = int(count_text)
        samples += count
        frames = [short_frame(f) for f in stack.split(";")]
        leaf, package = frames[-1]
        self_n[leaf] = self_n.get(leaf, 0) + count
        package_n[package] = package_n.get(package, 0) + count
        for name in {name for name, _ in frames}:
            total_n[name] = total_n.get(name, 0) + count
    us = cpu_us_per_req / max(samples, 1)

    def rank(counts: dict[str, int], n: int) -> list[dict[str, Any]]:
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [{"name": k, "us_per_req": v * us, "share": v / max(samples, 1)} for k, v in ordered]

    by_self = rank(self_n, top)
    for row in by_self:
        row["total_us_per_req"] = total_n[row["name"]] * us
    return {
        "samples": samples,
        "cpu_us_per_req": cpu_us_per_req,
        "self": by_self,
        "inclusive": rank(total_n, top),
        "packages": rank(package_n, len(package_n)),
    }


def profile_markdown(profiles: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    sockets = f"{meta['duration_s']} s per server" if meta["duration_s"] else "no socket-level profiles"
    lines = [
        "# 1-client profile of `/act` (`scripts/bench_serve.py --profile`)",
        "",
        f"{meta['when']} · {meta['machine']} · load average {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end · py-spy at {PROFILE_RATE} Hz, on-CPU samples only, "
        f"{sockets}. µs/req = share of the samples × the server CPU µs/req "
        "measured over the same window. `in process` sections: the app called directly (no sockets, no "
        f"uvicorn), {meta['inproc_requests']} requests one at a time; µs/req = share × that run's thread CPU "
        "µs/req.",
    ]
    for name, prof in profiles.items():
        lines += [
            "",
            f"## {name}: {prof['cpu_us_per_req']:.0f} µs CPU per request ({prof['samples']} samples, "
            f"{prof['requests']} requests)",
            "",
            "| package | self µs/req | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| {p['name']} | {p['us_per_req']:.1f} | {p['share']:.1%} |" for p in prof["packages"]]
        lines += ["", "| function (self time) | self µs/req | incl. µs/req |", "|---|---:|---:|"]
        lines += [
            f"| `{r['name']}` | {r['us_per_req']:.1f} | {r['total_us_per_req']:.1f} |" for r in prof["self"]
        ]
    return "\n".join(lines) + "\n"


# ----- report ---------------------------------------------------------------------------------------
def variant_of(r: dict[str, Any]) -> str:
    """`arch:executor`, prefixed with `baseline ` for the server run from --baseline's sources."""
    name = f"{r['model']}:{r['executor']}"
    return f"baseline {name}" if r["server"] == "baseline" else name


def add_overhead(records: list[dict[str, Any]], sampler: dict[str, list[dict[str, Any]]]) -> None:
    """overhead µs/req = server CPU µs/req − the floor's (same clients) − the sampler's µs per row at the
    measured mean batch: what the serving code costs beyond FastAPI + uvicorn and the model."""
    floor = {r["clients"]: r for r in records if r["server"] == "floor"}
    for r in records:
        if r["server"] == "floor" or r["mean_batch"] is None:
            continue
        per_row = sampler_us_per_row(sampler[r["model"]], r["mean_batch"])
        r["sampler_us_per_row"] = per_row
        r["overhead_us_per_req"] = (
            r["server_cpu_us_per_req"] - floor[r["clients"]]["server_cpu_us_per_req"] - per_row
        )


def add_inproc_overhead(inproc: dict[str, Any], sampler: dict[str, list[dict[str, Any]]]) -> None:
    """In-process overhead: the app's CPU µs/req − the floor app's − the sampler's µs per row (batch 1 for
    one request at a time; batch 64 for 64 at once, which one loop tick joins into one call), the sampler
    as timed in the app's own process right after it ran when the child measured it (the same moment of a
    shared box), else the sampler table's. `python_…` subtracts the ONNX call as it ran inside the app
    instead (caches are colder there than in a loop of sampler calls), which leaves the Python the serving
    code adds."""
    floor = inproc["floor"]["us_per_req"]
    for info in inproc.values():
        if info["model"] is None:
            continue
        own = info.get("sampler_us_per_row", {})
        info["overhead_us_per_req"] = {
            c: us - floor[c] - own.get(c, sampler_us_per_row(sampler[info["model"]], float(c)))
            for c, us in info["us_per_req"].items()
        }
        info["python_overhead_us_per_req"] = {
            c: us - floor[c] - info["onnx_us_per_req"][c] for c, us in info["us_per_req"].items()
        }


def ratios(records: list[dict[str, Any]], sampler: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per server (arch:executor): req/s, p99, overhead against the floor at the same client count."""
    floor = {r["clients"]: r for r in records if r["server"] == "floor"}
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(variant_of(r) for r in records if r["server"] != "floor"):
        rows = [r for r in records if r["server"] != "floor" and variant_of(r) == variant]
        arch = rows[0]["model"]
        compute_1 = next(r["onnx_ms"] for r in sampler[arch] if r["batch"] == 1)
        speed_1 = next(r["speedup"] for r in sampler[arch] if r["batch"] == 1)
        per: dict[str, Any] = {}
        for r in rows:
            f = floor[r["clients"]]
            per[str(r["clients"])] = {
                "rps_ratio": r["rps"] / f["rps"],
                "cpu_per_req_ratio": r["server_cpu_us_per_req"] / f["server_cpu_us_per_req"],
                "p99_ratio": r["p99_ms"] / f["p99_ms"],
                "p50_over_floor_ms": r["p50_ms"] - f["p50_ms"],
                "overhead_us_per_req": r.get("overhead_us_per_req"),
            }
        one, many = per.get("1"), per.get("64")
        rps_goal = RPS_64_GOAL.get(arch, 0.75)

        def overhead_ok(level: dict[str, Any] | None, clients: int) -> bool | None:
            if level is None or level["overhead_us_per_req"] is None:
                return None
            return bool(level["overhead_us_per_req"] <= OVERHEAD_GOAL_US[clients])

        out[variant] = {
            "by_clients": per,
            "sampler_ms_batch1": compute_1,
            "goals": {
                f"overhead_1_le_{OVERHEAD_GOAL_US[1]:g}us": overhead_ok(one, 1),
                f"overhead_64_le_{OVERHEAD_GOAL_US[64]:g}us": overhead_ok(many, 64),
                "p50_1_le_floor_plus_1.2x_sampler": None
                if one is None
                else one["p50_over_floor_ms"] <= 1.2 * compute_1,
                f"rps_64_ge_{rps_goal:g}x_floor": None if many is None else many["rps_ratio"] >= rps_goal,
                "p99_64_le_1.5x_floor": None if many is None else many["p99_ratio"] <= 1.5,
                "onnx_ge_3x_torch_batch1": speed_1 >= 3.0,
            },
        }
    return out


def inproc_lines(result: dict[str, Any]) -> list[str]:
    """The in-process table (markdown lines) of serve.md and serve-inproc.md."""
    n = result["meta"]["inproc_requests"]
    repeats = result["meta"].get("inproc_repeats", 1)
    lines = [
        "",
        "## In process: the ASGI app called directly (thread CPU µs per request)",
        "",
        "No sockets, no uvicorn, no scheduler: each app (floor included) is called on uvloop with the same "
        f"bodies, {n} requests one at a time, then {n} as 64 at once"
        + (f"; median of {repeats} runs, the apps in turn" if repeats > 1 else "")
        + "; overhead = app − floor app − sampler µs/row (batch 1, batch 64). This is what the serving code "
        "itself costs; other jobs on the box move it far less than wall time, though not to nothing (they "
        "share the cores' caches).",
        "",
        "`ONNX in app` is the thread CPU of the ONNX calls inside the app; `sampler` the median thread CPU "
        "of the same session called in a loop in the same process right after (µs per row); `Python` = app "
        "− floor app − ONNX in app: the serving code's own cost.",
        "",
        "| app | model | clients | µs/req | ONNX in app µs/req | sampler µs/row | overhead µs/req "
        "| Python µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, info in result["inproc"].items():
        for c, us in info["us_per_req"].items():
            onnx = info["onnx_us_per_req"].get(c) if info["model"] else None
            own = info.get("sampler_us_per_row", {}).get(c)
            over = info.get("overhead_us_per_req", {}).get(c)
            py = info.get("python_overhead_us_per_req", {}).get(c)
            cells = ["" if v is None else f"{v:.0f}" for v in (onnx, own, over, py)]
            lines.append(f"| {name} | {info['model'] or ''} | {c} | {us:.0f} | " + " | ".join(cells) + " |")
    return lines


def write_report(out_dir: Path, result: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    meta = result["meta"]
    lines = [
        "# Serving benchmark (`make bench-serve`)",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['duration_s']} s per level after {meta['warmup_s']} s "
        f"warm-up · load average (1 min) {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end · "
        "load generator: raw-socket asyncio, keep-alive, closed loop, same box.",
        "",
        "Floor = FastAPI + uvicorn app with the same route, orjson parse and reply shape but no model.",
        "Architectures: "
        + ", ".join(f"`{k}` = {h} wide × {b} blocks, {s} Euler steps" for k, (h, b, s) in ARCHS.items())
        + ".",
        "",
        "| server | model | executor | clients | req/s | p50 ms | p99 ms | mean batch | server CPU µs/req "
        "| sampler µs/row | overhead µs/req |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["records"]:
        mb = "" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
        per_row = "" if r.get("sampler_us_per_row") is None else f"{r['sampler_us_per_row']:.0f}"
        overhead = "" if r.get("overhead_us_per_req") is None else f"{r['overhead_us_per_req']:.0f}"
        lines.append(
            f"| {r['server']} | {r['model'] or ''} | {r['executor'] or ''} | {r['clients']} | "
            f"{r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {mb} | "
            f"{r['server_cpu_us_per_req']:.0f} | {per_row} | {overhead} |"
        )
    lines += inproc_lines(result)
    lines += ["", "## Against the floor of the same run", ""]
    for arch, info in result["ratios"].items():
        lines.append(f"**qipo {arch}** (its sampler at batch 1: {info['sampler_ms_batch1']:.3f} ms)")
        lines.append("")
        lines.append(
            "| clients | req/s ÷ floor | p99 ÷ floor | p50 − floor p50 (ms) | server CPU/req ÷ floor "
            "| overhead µs/req |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for c, v in info["by_clients"].items():
            overhead = "" if v["overhead_us_per_req"] is None else f"{v['overhead_us_per_req']:.0f}"
            lines.append(
                f"| {c} | {v['rps_ratio']:.2f} | {v['p99_ratio']:.2f} | {v['p50_over_floor_ms']:.2f} | "
                f"{v['cpu_per_req_ratio']:.2f} | {overhead} |"
            )
        lines.append("")
        lines.append("Goals: " + ", ".join(f"{k}: {GOAL_WORD[v]}" for k, v in info["goals"].items()))
        lines.append("")
    lines += ["## Fused ONNX sampler vs torch eager (1 thread each, median CPU time per call)", ""]
    lines += ["| model | batch | ONNX ms | torch eager ms | speed-up |", "|---|---:|---:|---:|---:|"]
    for arch, rows in result["sampler"].items():
        for s in rows:
            if "torch_eager_ms" not in s:
                continue
            lines.append(
                f"| {arch} | {s['batch']} | {s['onnx_ms']:.3f} | {s['torch_eager_ms']:.3f} | "
                f"{s['speedup']:.1f}× |"
            )
    lines += ["", NOTES, ""]
    (out_dir / "serve.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        series: dict[str, list[dict[str, Any]]] = {}
        for r in result["records"]:
            label = "floor" if r["server"] == "floor" else f"qipo {variant_of(r)}"
            series.setdefault(label, []).append(r)
        for label, rows in series.items():
            xs = [r["clients"] for r in rows]
            axes[0].plot(xs, [r["rps"] for r in rows], marker="o", label=label)
            axes[1].plot(xs, [r["p99_ms"] for r in rows], marker="o", label=label)
        for ax, title in zip(axes, ("req/s", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_title(title)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "serve.png", dpi=100)
        plt.close(fig)
    except ImportError:
        pass


def inproc_only(args: argparse.Namespace) -> None:
    """`--inproc-only`: the in-process apps and the sampler at batch 1 and 64; no sockets, no torch timing."""
    if args.baseline is not None and not (args.baseline / "service" / "app.py").exists():
        raise SystemExit(f"--baseline {args.baseline} has no service/app.py; give a source tree's root")
    if args.profile:
        py_spy()
    from service.registry import open_registry

    loadavg_at_start = os.getloadavg()
    variants = [v.strip() for v in args.servers.split(",") if v.strip().endswith(":inline")]
    archs = sorted({v.split(":")[0] for v in variants})
    specs = {v: ("qipo", *v.split(":"), ROOT) for v in variants}
    if args.baseline is not None:
        specs[f"baseline:{variants[0]}"] = ("baseline", *variants[0].split(":"), args.baseline.resolve())
    sampler: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_path = Path(tmp)
        for arch in archs:
            art = tmp_path / f"artifact-{arch}"
            sampler[arch] = bench_sampler(build_artifact(art, *ARCHS[arch]), art, (1, 64), torch_too=False)
            reg = open_registry(str(tmp_path / f"registry-{arch}"), "qipo")
            mv = reg.publish(art)
            reg.promote(mv.name, "production", mv.version)
        args.out.mkdir(parents=True, exist_ok=True)
        inproc = inproc_costs(
            specs, tmp_path, args.out if args.profile else None, args.inproc_requests, args.inproc_repeats
        )
    add_inproc_overhead(inproc, sampler)
    profiles = {
        f"in process, one request at a time: {k}": v.pop("profile")
        for k, v in inproc.items()
        if "profile" in v
    }
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_at_start": loadavg_at_start,
        "loadavg_at_end": os.getloadavg(),
        "duration_s": 0,
        "inproc_requests": args.inproc_requests,
        "inproc_repeats": args.inproc_repeats,
        "baseline": None if args.baseline is None else str(args.baseline),
    }
    result = {"meta": meta, "inproc": inproc, "sampler": sampler}
    (args.out / "serve-inproc.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# In-process cost of `/act` (`scripts/bench_serve.py --inproc-only`)",
        "",
        f"{meta['when']} · {meta['machine']} · load average {loadavg_at_start[0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end. Sampler (ONNX alone, median thread CPU per call): "
        + ", ".join(f"`{a}` {r[0]['onnx_ms'] * 1e3:.0f} µs at batch 1" for a, r in sampler.items())
        + ". No socket numbers here: those come from the full `make bench-serve` (serve.md).",
        *inproc_lines(result),
    ]
    (args.out / "serve-inproc.md").write_text("\n".join(lines) + "\n")
    print((args.out / "serve-inproc.md").read_text())
    if profiles:
        (args.out / "serve-profile-inproc-run.json").write_text(json.dumps(profiles, indent=2) + "\n")
        (args.out / "serve-profile-inproc-run.md").write_text(profile_markdown(profiles, meta))
        print((args.out / "serve-profile-inproc-run.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--servers",
        default="default:inline,default:thread,small:inline,small:thread",
        help=f"qipo servers as arch:executor (arch in {','.join(ARCHS)}; executor inline|thread)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile every server at 1 client with py-spy: serve-profile-run.md + collapsed stacks",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also serve the first --servers entry with the `service` package of this source tree (e.g. an "
        "older commit's, from `git archive`), so a change is measured against it in the same run",
    )
    parser.add_argument(
        "--inproc-only",
        action="store_true",
        help="no sockets: only the in-process apps (thread CPU) and the ONNX sampler at batch 1 and 64, "
        "into serve-inproc.md/json (with --profile: serve-profile-inproc-run.md)",
    )
    parser.add_argument(
        "--inproc-repeats",
        type=int,
        default=1,
        help="run every in-process app this many times, in turn, and keep the medians (a shared box)",
    )
    parser.add_argument(
        "--inproc-requests",
        type=int,
        default=INPROC_REQUESTS,
        help="requests per in-process level (one at a time, then 64 at once)",
    )
    args = parser.parse_args()
    if args.inproc_only:
        inproc_only(args)
        return
    if args.baseline is not None and not (args.baseline / "service" / "app.py").exists():
        raise SystemExit(f"--baseline {args.baseline} has no service/app.py; give a source tree's root")
    if args.profile:
        py_spy()  # fail before the long part when it is missing
    loadavg_at_start = os.getloadavg()

    from tqdm import tqdm

    from service.registry import open_registry

    levels = [int(c) for c in args.clients.split(",")]
    variants = [v.strip() for v in args.servers.split(",") if v.strip()]
    archs = sorted({v.split(":")[0] for v in variants})
    # name -> (kind of record, arch, executor, where `service` is imported from)
    specs = {v: ("qipo", *v.split(":"), ROOT) for v in variants}
    if args.baseline is not None:
        specs[f"baseline:{variants[0]}"] = ("baseline", *variants[0].split(":"), args.baseline.resolve())
    records: list[dict[str, Any]] = []
    sampler: dict[str, list[dict[str, Any]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_path = Path(tmp)
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for arch in archs:
                art = tmp_path / f"artifact-{arch}"
                policy = build_artifact(art, *ARCHS[arch])
                sampler[arch] = bench_sampler(policy, art)
                reg = open_registry(str(tmp_path / f"registry-{arch}"), "qipo")
                mv = reg.publish(art)
                reg.promote(mv.name, "production", mv.version)
            servers["floor"] = start_server("floor", tmp_path, tmp_path / "cache-floor", "inline")
            for name, (_, arch, executor, src) in specs.items():
                servers[name] = start_server(
                    "qipo", tmp_path / f"registry-{arch}", tmp_path / f"cache-{name}", executor, src
                )
            plan = [(c, name) for c in levels for name in ["floor", *specs]]
            for clients, name in tqdm(plan, desc="bench-serve", unit="level"):
                proc, port = servers[name]
                before = scrape_batches(port) if name != "floor" else (0.0, 0.0)
                res, cpu = asyncio.run(load_with_cpu(proc.pid, port, clients, args.warmup, args.duration))
                after = scrape_batches(port) if name != "floor" else (0.0, 0.0)
                calls = after[1] - before[1]
                kind, arch, executor, _ = specs.get(name, ("floor", None, None, ROOT))
                records.append(
                    {
                        "server": kind,
                        "model": arch,
                        "executor": executor,
                        "clients": clients,
                        "rps": res["rps"],
                        "p50_ms": res["p50_ms"],
                        "p99_ms": res["p99_ms"],
                        "mean_batch": None
                        if name == "floor"
                        else (after[0] - before[0]) / calls
                        if calls
                        else None,
                        "server_cpu_us_per_req": cpu * 1e6 / max(res["requests"], 1),
                        "requests": res["requests"],
                        "errors": res["errors"],
                    }
                )
            if args.profile:
                args.out.mkdir(parents=True, exist_ok=True)
                for name in tqdm(["floor", *specs], desc="profile", unit="server"):
                    proc, port = servers[name]
                    raw = args.out / f"serve-profile-{name.replace(':', '-')}.collapsed"
                    res, cpu = asyncio.run(load_profiled(proc.pid, port, 1, args.warmup, args.duration, raw))
                    profiles[name] = summarize_profile(raw, cpu * 1e6 / max(res["requests"], 1))
                    profiles[name]["requests"] = res["requests"]
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
        inproc = inproc_costs(
            specs, tmp_path, args.out if args.profile else None, args.inproc_requests, args.inproc_repeats
        )
        for name, info in inproc.items():
            if "profile" in info:
                profiles[f"in process, one request at a time: {name}"] = info.pop("profile")
    add_overhead(records, sampler)
    add_inproc_overhead(inproc, sampler)
    result: dict[str, Any] = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "loadavg_at_start": loadavg_at_start,
            "loadavg_at_end": os.getloadavg(),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "inproc_requests": args.inproc_requests,
            "inproc_repeats": args.inproc_repeats,
            "servers": variants,
            "baseline": None if args.baseline is None else str(args.baseline),
            "archs": {k: dict(zip(("hidden", "blocks", "steps"), ARCHS[k], strict=True)) for k in archs},
        },
        "records": records,
        "inproc": inproc,
        "ratios": ratios(records, sampler),
        "sampler": sampler,
    }
    write_report(args.out, result)
    print((args.out / "serve.md").read_text())
    if profiles:
        (args.out / "serve-profile-run.json").write_text(json.dumps(profiles, indent=2) + "\n")
        (args.out / "serve-profile-run.md").write_text(profile_markdown(profiles, result["meta"]))
        print((args.out / "serve-profile-run.md").read_text())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "_asgi":
        levels = tuple(int(c) for c in sys.argv[6:]) or (1, 64)
        asgi_cost(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), levels)
    else:
        main()
