"""Container health probe: GET a path of the local server, exit 0 on 200 (stdlib only, no curl in the image).

Usage: qipo-healthcheck [/readyz|/healthz]. The port comes from QIPO_PORT (default 8000).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/readyz"
    url = f"http://127.0.0.1:{os.environ.get('QIPO_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return 0 if reply.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{url}: HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}", file=sys.stderr)
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
