"""A raw-socket asyncio load generator for `POST /act`, and the server processes it loads.

N keep-alive connections, each sending the next request as soon as the last reply arrived (closed loop),
for a bounded time after a warm-up. The server's CPU seconds over the measured window come from
/proc/<pid>/stat, so a cost per request holds even when other jobs share the box.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
# Run by path, not `-m`: its sys.path[0] is then loadtests/, so `service` comes from PYTHONPATH (`src`).
CHILD = Path(__file__).resolve().with_name("serve_child.py")


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


async def load(port: int, clients: int, warmup: float, duration: float) -> dict[str, float]:
    """`clients` closed-loop connections for `warmup` + `duration` s; req/s and latency after the warm-up."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) so far: a cost per request that holds even
    when other work shares the box and wall-clock req/s does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the qipo_batch_size histogram in a /metrics page."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("qipo_batch_size_sum "):
            total = float(line.split()[1])
        elif line.startswith("qipo_batch_size_count "):
            count = float(line.split()[1])
    return total, count


def scrape_batches(port: int) -> tuple[float, float]:
    """(sum, count) of qipo_batch_size from the server's /metrics."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return batch_totals(data.decode())


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
    """Start a server process (`floor` or `qipo`); `src` is where its `service` package is imported from."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "serve", kind, str(port), str(registry), str(cache), executor],
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
