"""`make bench-grid`: QIPO-OT vs d3rlpy IQL and TD3+BC on the same datasets, one record per run, and the
summary (training/bench/grid_cli.py; `run --help` and `summarise --help` for the options)."""

import sys

from training.bench.grid_cli import main

if __name__ == "__main__":
    sys.exit(main())
