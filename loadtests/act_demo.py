"""Wait for a server to be ready, then print a few real /act answers (used by `make demo`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# Pendulum states (cos θ, sin θ, θ̇): one request each, then a batch of two.
BODIES: list[dict[str, Any]] = [
    {"state": [1.0, 0.0, 0.0], "seed": 1, "request_id": "upright"},
    {"state": [0.0, 1.0, 2.5], "seed": 1, "request_id": "sideways"},
    {"state": [-1.0, 0.0, -1.0], "seed": 1, "request_id": "hanging"},
    {"states": [[1.0, 0.0, 0.0], [0.0, -1.0, 4.0]], "request_id": "batch"},
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--log", type=Path, help="server log to show if it never becomes ready")
    parser.add_argument("--timeout", type=float, default=60.0)
    return parser.parse_args(argv)


def wait_ready(client: httpx.Client, url: str, timeout: float, log: Path | None = None) -> bool:
    """Poll /readyz until it answers 200 (prints its body) or `timeout` seconds pass (prints the server's
    log to stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready = client.get(f"{url}/readyz", timeout=2)
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            text = log.read_text() if log and log.exists() else ""
            print(f"error: {url} was not ready after {timeout:.0f}s\n{text}", file=sys.stderr)
            return False
        time.sleep(0.2)
    print(f"GET /readyz -> {ready.json()}")
    return True


def show_answers(client: httpx.Client, url: str, bodies: list[dict[str, Any]] = BODIES) -> bool:
    """POST each body to /act and print the reply; False at the first that is not a 200."""
    for body in bodies:
        reply = client.post(f"{url}/act", json=body, timeout=5)
        print(f"POST /act {json.dumps(body)}\n  -> {reply.status_code} {reply.text}")
        if reply.status_code != 200:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with httpx.Client() as client:
        if not wait_ready(client, args.url, args.timeout, args.log):
            return 1
        return 0 if show_answers(client, args.url) else 1
