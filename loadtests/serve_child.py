"""A serving-benchmark child process, run by path (never `-m`), so that `service` is imported from the
source tree first on PYTHONPATH (`--baseline`'s, or this checkout's) and `loadtests` from this checkout.

    python loadtests/serve_child.py serve KIND PORT REGISTRY CACHE EXECUTOR
    python loadtests/serve_child.py asgi KIND REGISTRY CACHE REQUESTS [LEVEL ...]
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: `service` stays `src`'s
    command, kind, *rest = argv
    if command == "serve":
        from loadtests.floor import serve

        port, registry, cache, executor = rest
        serve(kind, int(port), registry, cache, executor)
    elif command == "asgi":
        from loadtests.inproc import asgi_cost

        registry, cache, requests, *levels = rest
        asgi_cost(kind, registry, cache, int(requests), tuple(int(c) for c in levels) or (1, 64))
    else:
        raise SystemExit(f"unknown command {command!r}: serve | asgi")


if __name__ == "__main__":
    main(sys.argv[1:])
