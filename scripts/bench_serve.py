"""`make bench-serve`: the real server against a no-model floor, on loopback, plus the fused ONNX sampler
against torch eager (loadtests/serve_bench.py; `--help` for the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `loadtests` from this checkout

from loadtests.serve_bench import main

if __name__ == "__main__":
    main()
