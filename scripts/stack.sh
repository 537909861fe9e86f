#!/usr/bin/env bash
# The docker-compose topology as local processes (no Docker engine needed):
#   Redis (started only if none answers) → N `qipo serve` replicas on loopback ports → nginx balancer
#   → robots; Prometheus (Debian's package, optional) scrapes every replica.
# Usage: scripts/stack.sh up|down|status|restart|render
#   up       render configs, start what is missing, publish $STACK_ARTIFACT if the alias is missing
#   down     stop every process this script started (pid files under $STACK_DIR/pids)
#   restart  rolling restart of the replicas, one at a time behind nginx (no failed requests)
#   render   only write the nginx / Prometheus configs (CI runs `nginx -t` / `promtool` on them)
# Settings (environment): STACK_DIR, STACK_HOST, STACK_LB_PORT, STACK_API_PORTS, STACK_PROM_PORT,
# STACK_PROMETHEUS (auto|0|1), STACK_REGISTRY, STACK_PREFIX, STACK_ARTIFACT, plus any QIPO_* setting,
# which every replica inherits.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STACK_DIR="$(mkdir -p "${STACK_DIR:-$ROOT/build/stack}" && cd "${STACK_DIR:-$ROOT/build/stack}" && pwd)"
STACK_HOST="${STACK_HOST:-127.0.0.1}"
STACK_LB_PORT="${STACK_LB_PORT:-8080}"
STACK_API_PORTS="${STACK_API_PORTS:-8001 8002}"
STACK_PROM_PORT="${STACK_PROM_PORT:-9090}"
STACK_PROMETHEUS="${STACK_PROMETHEUS:-auto}"
STACK_PREFIX="${STACK_PREFIX:-qipo-stack}"
STACK_ARTIFACT="${STACK_ARTIFACT:-$ROOT/build/demo/artifact}"
BIN="${STACK_BIN:-$ROOT/.venv/bin}"
export PATH="$BIN:$PATH"
export QIPO_MODEL_NAME="${QIPO_MODEL_NAME:-pendulum-qipo}"
export QIPO_MODEL_REF="${QIPO_MODEL_REF:-production}"
PIDS="$STACK_DIR/pids"
LOGS="$STACK_DIR/logs"

default_registry() {
  # Redis (what compose runs) when this build has the Redis backend, else a directory on local disk.
  if "$BIN/python" -c "import service.registry.redis_registry" >/dev/null 2>&1; then
    echo "redis://127.0.0.1:6379/0"
  else
    echo "$STACK_DIR/registry"
  fi
}
STACK_REGISTRY="${STACK_REGISTRY:-$(default_registry)}"
export QIPO_REGISTRY="$STACK_REGISTRY" QIPO_REGISTRY_PREFIX="$STACK_PREFIX"

log() { printf '%s stack: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() {  # url seconds what
  local url=$1 secs=$2 what=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if "$BIN/python" - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
    sleep 0.1
  done
  die "$what did not answer $url within ${secs}s; see $LOGS"
}

want_prometheus() {
  case "$STACK_PROMETHEUS" in
    0 | no | false) return 1 ;;
    1 | yes | true) command -v prometheus >/dev/null || die "prometheus is not installed: apt-get install -y prometheus (or STACK_PROMETHEUS=0)"; return 0 ;;
    *) command -v prometheus >/dev/null ;;
  esac
}

render() {
  mkdir -p "$STACK_DIR/nginx/tmp" "$LOGS" "$PIDS" "$STACK_DIR/prometheus"
  local servers="" targets="" port
  for port in $STACK_API_PORTS; do
    servers+="        server $STACK_HOST:$port max_fails=0;"$'\n'
    targets+="${targets:+, }\"$STACK_HOST:$port\""
  done
  cp "$ROOT/deploy/nginx/qipo-proxy.conf" "$STACK_DIR/nginx/qipo-proxy.conf"
  STACK_SERVERS="$servers" "$BIN/python" - "$ROOT/deploy/nginx/stack.conf.in" "$STACK_DIR/nginx/nginx.conf" \
    "$STACK_DIR" "$STACK_HOST" "$STACK_LB_PORT" <<'PY'
import os, sys
src, dst, stack_dir, host, port = sys.argv[1:]
text = open(src).read()
for key, value in {"@STACK_DIR@": stack_dir, "@LB_HOST@": host, "@LB_PORT@": port,
                   "@UPSTREAM_SERVERS@": os.environ["STACK_SERVERS"].rstrip("\n")}.items():
    text = text.replace(key, value)
open(dst, "w").write(text)
PY
  sed "s|@TARGETS@|$targets|" "$ROOT/deploy/prometheus/stack.yml.in" >"$STACK_DIR/prometheus/prometheus.yml"
}

start_redis() {
  case "$STACK_REGISTRY" in redis://*) ;; *) return 0 ;; esac
  local hostport host port
  hostport="${STACK_REGISTRY#redis://}"
  hostport="${hostport%%/*}"
  host="${hostport%%:*}"
  port="${hostport##*:}"
  [ "$port" = "$hostport" ] && port=6379
  if redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
    log "redis answers on $host:$port (not started by the stack)"
    return 0
  fi
  case "$host" in 127.0.0.1 | localhost | ::1) ;; *) die "redis at $host:$port does not answer; start it or set STACK_REGISTRY" ;; esac
  command -v redis-server >/dev/null || die "redis-server is not installed: apt-get install -y redis-server"
  mkdir -p "$STACK_DIR/redis"
  redis-server --daemonize yes --bind "$host" --port "$port" --appendonly yes --appendfsync everysec \
    --save "" --dir "$STACK_DIR/redis" --pidfile "$PIDS/redis.pid" --logfile "$LOGS/redis.log"
  local i
  for ((i = 0; i < 50; i++)); do redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 || die "redis-server did not start; see $LOGS/redis.log"
  log "redis started on $host:$port (AOF in $STACK_DIR/redis)"
}

publish_if_empty() {
  if qipo registry show "$QIPO_MODEL_NAME" --ref "$QIPO_MODEL_REF" >/dev/null 2>&1; then return 0; fi
  [ -f "$STACK_ARTIFACT/manifest.json" ] ||
    die "registry $STACK_REGISTRY has no $QIPO_MODEL_NAME:$QIPO_MODEL_REF and $STACK_ARTIFACT is no artifact; run \`make demo\` or set STACK_ARTIFACT"
  sh "$ROOT/deploy/publish-if-empty.sh" "$STACK_ARTIFACT" >&2
}

start_replica() {
  local port=$1 pidfile="$PIDS/api-$1.pid"
  alive "$pidfile" && return 0
  QIPO_HOST="$STACK_HOST" QIPO_PORT="$port" QIPO_CACHE_DIR="$STACK_DIR/cache/api-$port" \
    nohup "$BIN/qipo" serve >>"$LOGS/api-$port.log" 2>&1 &
  echo $! >"$pidfile"
  log "replica pid $(cat "$pidfile") on $STACK_HOST:$port"
}

stop_pid() {  # pidfile: TERM, then KILL after 10 s
  local pidfile=$1 pid i
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

start_nginx() {
  alive "$STACK_DIR/nginx/nginx.pid" && { nginx -p "$STACK_DIR/nginx" -c "$STACK_DIR/nginx/nginx.conf" -e "$LOGS/nginx-error.log" -s reload; return 0; }
  command -v nginx >/dev/null || die "nginx is not installed: run \`make stack\` (it installs it) or apt-get install -y nginx"
  nginx -p "$STACK_DIR/nginx" -c "$STACK_DIR/nginx/nginx.conf" -e "$LOGS/nginx-error.log"
  log "nginx on $STACK_HOST:$STACK_LB_PORT"
}

start_prometheus() {
  want_prometheus || { log "prometheus skipped (not installed or STACK_PROMETHEUS=0)"; return 0; }
  alive "$PIDS/prometheus.pid" && return 0
  nohup prometheus --config.file="$STACK_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STACK_DIR/prometheus/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="$STACK_HOST:$STACK_PROM_PORT" >>"$LOGS/prometheus.log" 2>&1 &
  echo $! >"$PIDS/prometheus.pid"
  wait_http "http://$STACK_HOST:$STACK_PROM_PORT/-/ready" 30 prometheus
  log "prometheus on $STACK_HOST:$STACK_PROM_PORT"
}

cmd_up() {
  render
  start_redis
  publish_if_empty
  local port
  for port in $STACK_API_PORTS; do start_replica "$port"; done
  for port in $STACK_API_PORTS; do wait_http "http://$STACK_HOST:$port/readyz" 90 "replica $port"; done
  start_nginx
  wait_http "http://$STACK_HOST:$STACK_LB_PORT/readyz" 10 nginx
  start_prometheus
  log "up: robots → http://$STACK_HOST:$STACK_LB_PORT/act  (registry $STACK_REGISTRY, logs $LOGS)"
}

cmd_down() {
  if alive "$STACK_DIR/nginx/nginx.pid"; then
    nginx -p "$STACK_DIR/nginx" -c "$STACK_DIR/nginx/nginx.conf" -e "$LOGS/nginx-error.log" -s quit || true
    local i
    for ((i = 0; i < 50; i++)); do alive "$STACK_DIR/nginx/nginx.pid" || break; sleep 0.1; done
  fi
  local pidfile
  for pidfile in "$PIDS"/api-*.pid "$PIDS/prometheus.pid" "$PIDS/redis.pid"; do
    [ -e "$pidfile" ] && stop_pid "$pidfile"
  done
  log "down"
}

cmd_restart() {
  # One replica at a time: nginx sends its requests to the others while it restarts and warms up.
  local port
  for port in $STACK_API_PORTS; do
    stop_pid "$PIDS/api-$port.pid"
    start_replica "$port"
    wait_http "http://$STACK_HOST:$port/readyz" 90 "replica $port"
  done
  log "rolling restart done"
}

cmd_status() {
  local pidfile name
  for pidfile in "$PIDS"/*.pid "$STACK_DIR/nginx/nginx.pid"; do
    [ -e "$pidfile" ] || continue
    name="$(basename "$pidfile" .pid)"
    if alive "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: dead (stale $pidfile)"; fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  render) render ;;
  *) die "usage: scripts/stack.sh up|down|status|restart|render" ;;
esac
