"""`make bench-chunks`: chunk execution under simulated inference delay, closed loop through the real server
(loadtests/chunks.py; `--help` for the options).

    .venv/bin/python scripts/bench_chunks.py RUN_OR_ARTIFACT... [--out docs/bench]
    .venv/bin/python scripts/bench_chunks.py --smoke     # tiny Pendulum policies → build/bench-chunks-smoke
"""

import sys
from pathlib import Path

# `loadtests` and the test helpers it serves with, from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.chunks import main

if __name__ == "__main__":
    main()
