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
NAME=MEMORY_$RUN
TOKEN="memory-$RUN"
SERVICE_ENV=()
# shellcheck source=scripts/private-service.sh
. scripts/private-service.sh

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
  until [ "$(rc hget "n:{$sku}:sale" sold)" = "$ORDERS" ]; do sleep 0.2; done
  kill "$wrk_pid" 2>/dev/null; wait "$wrk_pid" 2>/dev/null || true
  # Every event delivered: the outbox holds nothing the relay still owes.
  until [ "$(rc xlen "n:{$sku}:outbox")" = 0 ]; do sleep 0.2; done
  sleep 1
  after=$(used)
  echo "  lua delta $(( $(used used_memory_lua) - before_lua )) overhead delta $(( $(used used_memory_overhead) - before_overhead ))"
  keys=$(rc --scan --pattern "n:{$sku}:*" | wc -l)
  for key in orders buyers deadlines outbox sale; do printf "  %s=%s" $key "$(rc memory usage "n:{$sku}:$key" samples 0)"; done; echo
  printf '%-8s %8d %14.1f %10d %12d\n' "$scenario" "$ORDERS" \
    "$(echo "($after - $before) / $ORDERS" | bc -l)" "$keys" "$(rc dbsize)"
done
