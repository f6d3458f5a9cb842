#!/usr/bin/env bash
# Redis memory per order (issue 23): ORDERS orders of one sale (per-user limit 2), bought over
# HTTP through the release binary, on a redis-server of this script's own (nothing else in
# it, no persistence), once the relay has delivered every event. Prints, per scenario, the
# bytes per order (INFO memory's used_memory, after the sale was created against after its
# orders) and the keys the sale holds. Scenarios:
#   one      ORDERS buyers, one order each (the issue's measurement)
#   two      ORDERS/2 buyers, two orders each
#   pending  as one, on a sale with a payment window: every order awaits payment (a
#            deadline each, until it is paid or expires)
#   ORDERS (20000)  CONNECTIONS (32)  REDIS_PORT (16399)  PORT (18281)
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-20000}
CONNECTIONS=${CONNECTIONS:-32}
REDIS_PORT=${REDIS_PORT:-16399}
PORT=${PORT:-18281}
RUN=mem$$
TOKEN="memory-$RUN"
BASE="http://127.0.0.1:$PORT"
export WRK_DIR=scripts/wrk

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/services.sh
cargo build --release --quiet --bin flashsale

WORK_DIR=$(mktemp -d)
REPO=$(pwd)
redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK_DIR" \
  --daemonize no >"$WORK_DIR/redis.log" 2>&1 &
REDIS_PID=$!
rc() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 50); do rc ping >/dev/null 2>&1 && break; sleep 0.1; done

FLASHSALE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" FLASHSALE_BIND="127.0.0.1:$PORT" \
FLASHSALE_NAMESPACE="m" FLASHSALE_ADMIN_TOKEN="$TOKEN" FLASHSALE_CONFIRM=redis \
FLASHSALE_STREAM="MEMORY_$RUN" FLASHSALE_SUBJECT_PREFIX="memory-$RUN" \
FLASHSALE_DEFAULT_SKU="kill-$RUN" \
  bash -c "cd '$WORK_DIR' && exec '$REPO/target/release/flashsale'" >"$WORK_DIR/service.log" 2>&1 &
SERVICE_PID=$!
cleanup() {
  kill "$SERVICE_PID" "$REDIS_PID" 2>/dev/null || true
  python3 -c 'import sys; sys.path.insert(0, "scripts"); import check_observability as c
c.delete_streams("nats://127.0.0.1:4222", sys.argv[1:])' "MEMORY_$RUN" "KV_MEMORY_${RUN}_SALES" || true
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

used() { rc info memory | sed -n "s/^${1:-used_memory}:\([0-9]*\).*/\1/p"; }

printf '%-8s %8s %14s %10s %12s\n' scenario orders bytes/order keys/sale keys_total
for scenario in one two pending; do
  sku="$scenario-$RUN"
  extra=
  [ "$scenario" = pending ] && extra=', "payment_timeout_secs": 3600'
  curl -fsS -o /dev/null -X PUT "$BASE/v1/sales/$sku" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"stock\": $ORDERS, \"per_user_limit\": 2$extra}"
  repeat=1
  [ "$scenario" = two ] && repeat=2
  before=$(used); before_lua=$(used used_memory_lua); before_overhead=$(used used_memory_overhead)
  SKU="$sku" REPEAT=$repeat wrk -t 2 -c "$CONNECTIONS" -d 600s -s scripts/wrk/purchase.lua "$BASE" \
    >"$WORK_DIR/wrk.log" 2>&1 &
  wrk_pid=$!
  until [ "$(rc hget "m:{$sku}:sale" sold)" = "$ORDERS" ]; do sleep 0.2; done
  kill "$wrk_pid" 2>/dev/null; wait "$wrk_pid" 2>/dev/null || true
  # Every event delivered: the outbox holds nothing the relay still owes.
  until [ "$(rc xlen "m:{$sku}:outbox")" = 0 ]; do sleep 0.2; done
  sleep 1
  after=$(used)
  echo "  lua delta $(( $(used used_memory_lua) - before_lua )) overhead delta $(( $(used used_memory_overhead) - before_overhead ))"
  keys=$(rc --scan --pattern "m:{$sku}:*" | wc -l)
  for key in orders buyers deadlines outbox sale; do printf "  %s=%s" $key "$(rc memory usage "m:{$sku}:$key" samples 0)"; done; echo
  printf '%-8s %8d %14.1f %10d %12d\n' "$scenario" "$ORDERS" \
    "$(echo "($after - $before) / $ORDERS" | bc -l)" "$keys" "$(rc dbsize)"
done
