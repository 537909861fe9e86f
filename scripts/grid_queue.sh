#!/usr/bin/env bash
# Run grid cells one after another on one core (each cell resumable: a recorded run is skipped).
# Usage: scripts/grid_queue.sh "algo env dataset seed" ...   e.g. "qipo-ot hopper medium 0"
set -u
cd "$(dirname "$0")/.."
for cell in "$@"; do
  read -r algo env dataset seed <<<"$cell"
  OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_grid.py run --envs "$env" --datasets "$dataset" \
    --algos "$algo" --seeds "$seed" --evals 3 --threads 1 || echo "cell failed: $cell" >&2
done
