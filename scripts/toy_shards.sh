#!/usr/bin/env bash
# The 2-D toy benchmark at the large size (`qipo toy bench --size large`), one dataset per shard on one core
# (about an hour each on CPU), then `qipo toy merge` joins every finished shard into
# $TOY_LARGE/toy.{json,md,png}. Resumable: a finished shard is skipped, and an unfinished one resumes at its
# next model from the checkpoints in <shard>/partial/ (small JSON; commit them to finish on another
# machine). TOY_SIZE=... TOY_LARGE=... run another size into another folder.
# Usage: scripts/toy_shards.sh 2spirals swissroll ...   (two cores: two calls with different datasets)
set -u
cd "$(dirname "$0")/.."
TOY_LARGE=${TOY_LARGE:-docs/bench/toy-8k}
TOY_SIZE=${TOY_SIZE:---size large}
for ds in "$@"; do
  dir="$TOY_LARGE/shards/$ds"
  if [ -f "$dir/toy.samples.npz" ]; then echo "skip $ds: $dir is finished"; continue; fi
  # shellcheck disable=SC2086  # TOY_SIZE is a list of flags
  OMP_NUM_THREADS=1 .venv/bin/qipo toy bench --out "$dir" --datasets "$ds" --threads 1 $TOY_SIZE \
    || echo "shard failed: $ds" >&2
done
finished=("$TOY_LARGE"/shards/*/toy.samples.npz)
[ -e "${finished[0]}" ] && .venv/bin/qipo toy merge "${finished[@]%/toy.samples.npz}" --out "$TOY_LARGE"
