#!/usr/bin/env bash
# Makes sure Redis and NATS (with JetStream) listen on their standard local ports, installing
# them from Debian packages and starting them when absent. Safe to run again: whatever
# already listens is left alone.
#
#   REDIS_PORT (6379)  NATS_PORT (4222)  FLASHSALE_STATE_DIR (/var/tmp/flashsale)
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
NATS_PORT=${NATS_PORT:-4222}
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}

log() { echo "services: $*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
install_package() { # package, binary it provides
  command -v "$2" >/dev/null 2>&1 && return 0
  log "installing $1 from Debian packages"
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  # The packages' own service units are not used: each server is started below, in the
  # background, the same way on a workstation, in a container or in CI.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

wait_for() { # name, port
  for _ in $(seq 1 100); do
    listening "$2" && { log "$1 listening on 127.0.0.1:$2"; return 0; }
    sleep 0.2
  done
  log "$1 did not start on port $2; see $STATE_DIR/$1.log"
  exit 1
}

mkdir -p "$STATE_DIR"

if listening "$REDIS_PORT"; then
  log "redis already listening on 127.0.0.1:$REDIS_PORT"
else
  install_package redis-server redis-server
  # Stock lives in memory only here; a production Redis would keep AOF on.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log"
  wait_for redis "$REDIS_PORT"
fi

if listening "$NATS_PORT"; then
  log "nats already listening on 127.0.0.1:$NATS_PORT"
else
  install_package nats-server nats-server
  mkdir -p "$STATE_DIR/nats"
  setsid nohup nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE_DIR/nats" \
    >"$STATE_DIR/nats.log" 2>&1 < /dev/null &
  wait_for nats "$NATS_PORT"
fi
