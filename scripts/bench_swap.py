"""`make bench-swap`: p99 latency in the seconds after each promotion vs steady p99 of the same run, two
replicas following one Redis registry (loadtests/swap.py; `--help` for the options)."""

import sys
from pathlib import Path

# `loadtests` and the e2e fleet it drives, from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.swap import main

if __name__ == "__main__":
    raise SystemExit(main())
