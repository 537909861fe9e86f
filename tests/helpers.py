"""Shared test helpers: a real uvicorn server on a free loopback port, in a background thread or as a
`qipo serve` process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    """A started server: its URL, and the uvicorn.Server so a test can stop it mid-load."""

    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


@contextlib.contextmanager
def running_server(app: Any, timeout: float = 30.0) -> Iterator[Running]:
    """Start `app` under real uvicorn on a free 127.0.0.1 port; stop it (draining) on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    running = Running(f"http://127.0.0.1:{port}", app, server, thread)
    try:
        yield running
    finally:
        running.stop(timeout)


@contextlib.contextmanager
def qipo_server(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60.0) -> Iterator[str]:
    """`qipo serve ARGS` as a process on a free loopback port; yields its URL once /readyz answers 200."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
