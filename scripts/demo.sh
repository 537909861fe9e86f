#!/usr/bin/env bash
# `make demo`: data → BC and QIPO-OT on Pendulum `mixed` → side-by-side evaluation → ONNX export →
# directory registry (alias `production`) → `qipo serve` on 127.0.0.1 → a few real /act requests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DEMO:-build/demo}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/7 datasets: Pendulum-v1 expert / medium / random / mixed (scripted controller, Minari format)"
"$BIN/qipo" data make pendulum --out "$OUT/data"
DATA="$OUT/data/pendulum/mixed-v0"

step "2/7 BC: behaviour cloning with a flow policy (the QIPO warm-up alone)"
"$BIN/qipo" train "$DATA" --out "$OUT/runs/bc" --config configs/pendulum-demo.json --algo bc \
  --eval-episodes 0 --threads "$THREADS"

step "3/7 QIPO-OT: softmax-Q critic + Q-weighted policy improvement, starting from the BC policy"
"$BIN/qipo" train "$DATA" --out "$OUT/runs/qipo" --config configs/pendulum-demo.json \
  --behavior-from "$OUT/runs/bc" --eval-episodes 0 --threads "$THREADS"

step "4/7 evaluation: 10 episodes each, the same fixed seeds"
"$BIN/qipo" eval "$OUT/runs/bc" "$OUT/runs/qipo" --episodes 10 --json "$OUT/eval.json"

step "5/7 export QIPO to ONNX (whole 10-step sampler in one graph) + manifest"
"$BIN/qipo" export "$OUT/runs/qipo" --out "$OUT/artifact" --name pendulum-qipo \
  --scores "$OUT/eval.json"

step "6/7 publish to the directory registry and point alias 'production' at it"
"$BIN/qipo" registry publish "$OUT/artifact" --registry "$OUT/registry" --alias production
"$BIN/qipo" registry list --registry "$OUT/registry"

step "7/7 serve on http://$HOST:$PORT and ask for actions"
QIPO_CACHE_DIR="$OUT/cache" "$BIN/qipo" serve --registry "$OUT/registry" --host "$HOST" --port "$PORT" \
  > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
"$BIN/python" scripts/act_demo.py "http://$HOST:$PORT" --log "$OUT/serve.log"
printf '\nDemo done: runs in %s/runs, artifact in %s/artifact, registry in %s/registry.\n' "$OUT" "$OUT" "$OUT"
