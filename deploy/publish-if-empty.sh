#!/bin/sh
# One-shot: publish the bundled demo artifact and point the served alias at it, unless the registry
# already has that alias. Safe to run on every `docker compose up` (it never overwrites a version).
set -eu
artifact="${1:-/opt/qipo/demo}"
name="${QIPO_MODEL_NAME:-pendulum-qipo}"
alias="${QIPO_MODEL_REF:-production}"
if qipo registry show "$name" --ref "$alias" >/dev/null 2>&1; then
  echo "registry ${QIPO_REGISTRY:-?} already has ${name}:${alias}; nothing to publish"
  exit 0
fi
echo "registry ${QIPO_REGISTRY:-?} has no ${name}:${alias}; publishing ${artifact}"
qipo registry publish "$artifact" --alias "$alias"
