"""Wait for a server to be ready, then print a few real /act answers (used by `make demo`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--log", type=Path, help="server log to show if it never becomes ready")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            ready = httpx.get(f"{args.url}/readyz", timeout=2)
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            log = args.log.read_text() if args.log and args.log.exists() else ""
            print(f"error: {args.url} was not ready after {args.timeout:.0f}s\n{log}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"GET /readyz -> {ready.json()}")
    bodies = [
        {"state": [1.0, 0.0, 0.0], "seed": 1, "request_id": "upright"},
        {"state": [0.0, 1.0, 2.5], "seed": 1, "request_id": "sideways"},
        {"state": [-1.0, 0.0, -1.0], "seed": 1, "request_id": "hanging"},
        {"states": [[1.0, 0.0, 0.0], [0.0, -1.0, 4.0]], "request_id": "batch"},
    ]
    for body in bodies:
        reply = httpx.post(f"{args.url}/act", json=body, timeout=5)
        print(f"POST /act {json.dumps(body)}\n  -> {reply.status_code} {reply.text}")
        if reply.status_code != 200:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
