#!/bin/sh
# The training image's entry point (deploy/k8s/train): one pod of an indexed Job, i.e. one torchrun node.
#   qipo-train-job            launch torchrun (c10d rendezvous at $QIPO_TRAIN_RDZV, $QIPO_TRAIN_NNODES
#                             pods × $QIPO_TRAIN_NPROC processes); when the run has reached its last step,
#                             pod 0 exports it and publishes the artifact to the registry ($QIPO_REGISTRY,
#                             from qipo-settings)
#   qipo-train-job worker     what torchrun starts per process: `qipo train`, with --resume when the run
#                             already has a checkpoint (a restarted pod or torchrun restart continues it)
set -eu
run="${QIPO_TRAIN_RUNS:-/runs}/${QIPO_TRAIN_RUN:?set QIPO_TRAIN_RUN (the run directory name)}"
dataset="${QIPO_TRAIN_DATASET:?set QIPO_TRAIN_DATASET (a path under the dataset volume)}"

if [ "${1:-}" = worker ]; then
  resume=""
  if [ -f "$run/checkpoint.pt" ]; then
    resume="--resume"
  fi
  # QIPO_TRAIN_ARGS is a list of `qipo train` flags: split on spaces on purpose.
  # shellcheck disable=SC2086
  exec qipo train "$dataset" --out "$run" $resume ${QIPO_TRAIN_ARGS:-}
fi

index="${JOB_COMPLETION_INDEX:-0}"
echo "qipo-train-job: pod $index of ${QIPO_TRAIN_NNODES:-1}, ${QIPO_TRAIN_NPROC:-1} processes, run $run"
torchrun \
  --nnodes="${QIPO_TRAIN_NNODES:-1}" \
  --nproc-per-node="${QIPO_TRAIN_NPROC:-1}" \
  --rdzv-backend=c10d \
  --rdzv-endpoint="${QIPO_TRAIN_RDZV:-localhost:29400}" \
  --rdzv-id="${QIPO_TRAIN_RUN}" \
  --max-restarts="${QIPO_TRAIN_MAX_RESTARTS:-3}" \
  --no-python sh "$0" worker

if [ "$index" = 0 ] && [ ! -f "$run/summary.json" ]; then
  echo "qipo-train-job: $run stopped before its last step (--until); not published"
elif [ "$index" = 0 ]; then
  artifact="$run/artifact"
  rm -rf "$artifact"
  qipo export "$run" --out "$artifact" ${QIPO_MODEL_NAME:+--name "$QIPO_MODEL_NAME"}
  if [ -n "${QIPO_TRAIN_ALIAS:-}" ]; then
    qipo registry publish "$artifact" --alias "$QIPO_TRAIN_ALIAS"
  else
    qipo registry publish "$artifact"
  fi
fi
