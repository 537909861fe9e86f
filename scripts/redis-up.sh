#!/usr/bin/env bash
# Start a throw-away redis-server on 127.0.0.1:6379 if none answers (tests need a real Redis).
set -euo pipefail
if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
fi
mkdir -p /tmp/qipo-redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /tmp/qipo-redis --logfile /tmp/qipo-redis/redis.log
for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "error: redis-server did not answer on 127.0.0.1:6379; see /tmp/qipo-redis/redis.log" >&2
exit 1
