"""`make demo`: wait for the server to be ready, then print a few /act answers (loadtests/act_demo.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `loadtests` from this checkout

from loadtests.act_demo import main

if __name__ == "__main__":
    sys.exit(main())
