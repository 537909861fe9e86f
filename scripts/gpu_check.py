"""`scripts/gpu-check.sh`: what a CUDA GPU changes, measured in one short run (loadtests/gpu_check.py;
`--help` for the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `loadtests` from this checkout

from loadtests.gpu_check import main

if __name__ == "__main__":
    main()
