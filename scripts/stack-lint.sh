#!/usr/bin/env bash
# Deploy checks, all offline (validators from PyPI and Debian): Dockerfile (hadolint), compose file
# (compose-spec JSON schema), Kubernetes manifests (kubernetes-validate, strict), nginx configs (nginx -t),
# Prometheus configs (promtool), Grafana provisioning (JSON/YAML), shell scripts (bash -n, shellcheck when
# installed), Python of loadtests/ and deploy/ (ruff, mypy). When a Docker engine answers, also builds the
# serving image and runs `docker compose config`. Exits non-zero on the first failing check.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="${STACK_BIN:-$ROOT/.venv/bin}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
step() { printf '== %s\n' "$*"; }

step "hadolint Dockerfile"
"$BIN/hadolint" Dockerfile

step "compose file against the compose-spec schema"
"$BIN/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

step "kubernetes manifests (kubernetes-validate --strict)"
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
"$BIN/kubernetes-validate" --strict --quiet "${manifests[@]}"
step "kustomizations list only files that exist"
"$BIN/python" - <<'PY'
import pathlib, sys, yaml
bad = []
for k in pathlib.Path("deploy/k8s").rglob("kustomization.yaml"):
    for res in yaml.safe_load(k.read_text())["resources"]:
        if not (k.parent / res).exists():
            bad.append(f"{k}: {res}")
if bad:
    sys.exit("missing kustomize resources: " + ", ".join(bad))
PY

step "nginx -t (compose balancer and local stack balancer)"
nginx -q -t -c "$ROOT/deploy/nginx/nginx.conf" -e "$TMP/nginx-error.log"
STACK_DIR="$TMP/stack" bash scripts/stack.sh render
nginx -q -t -p "$TMP/stack/nginx" -c "$TMP/stack/nginx/nginx.conf" -e "$TMP/nginx-error.log"

step "promtool check config"
promtool check config deploy/prometheus/prometheus.yml
promtool check config "$TMP/stack/prometheus/prometheus.yml"

step "grafana provisioning parses"
"$BIN/python" - <<'PY'
import json, pathlib, yaml
for p in pathlib.Path("deploy/grafana/provisioning").rglob("*.yml"):
    yaml.safe_load(p.read_text())
for p in pathlib.Path("deploy/grafana/dashboards").glob("*.json"):
    dash = json.loads(p.read_text())
    assert dash["panels"], f"{p}: no panels"
PY

step "shell scripts"
for f in scripts/stack*.sh scripts/docker-engine.sh deploy/*.sh; do bash -n "$f"; done
if command -v shellcheck >/dev/null; then
  shellcheck -S warning scripts/stack*.sh scripts/docker-engine.sh deploy/*.sh
fi

step "ruff + mypy on loadtests/ and deploy/"
"$BIN/ruff" check loadtests deploy
"$BIN/ruff" format --check loadtests deploy
"$BIN/mypy" --follow-imports=silent --explicit-package-bases loadtests deploy/healthcheck.py

if docker info >/dev/null 2>&1; then
  step "docker build + docker compose config (engine answers)"
  docker build --target serve -t qipo-serve:lint .
  docker compose --profile gpu --profile grafana config -q
else
  step "no Docker engine answers: image build and \`docker compose config\` skipped"
fi
echo "deploy checks passed"
