#!/usr/bin/env bash
# Ended sales leaving Redis (issue 23): two sales of at least ORDERS orders each, bought over HTTP
# through the release binary on a redis-server of this script's own. One is ended and
# archived (FLASHSALE_ARCHIVE_AFTER_SECS=1); the other stays live. Prints Redis's
# used_memory before the sales, with them, and after the archive, then the order reads per
# second of each sale (wrk, random orders): the live one from Redis, the archived one from
# the record (JetStream, folded once per replica).
#   ORDERS (20000)  CONNECTIONS (32)  READ_SECONDS (10)  REDIS_PORT (16398)  PORT (18282)
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-20000}
CONNECTIONS=${CONNECTIONS:-32}
READ_SECONDS=${READ_SECONDS:-10}
REDIS_PORT=${REDIS_PORT:-16398}
PORT=${PORT:-18282}
NAME=ARCHIVE_$$
TOKEN="archive-$$"
SERVICE_ENV=(FLASHSALE_ARCHIVE_AFTER_SECS=1 FLASHSALE_IDEMPOTENCY_TTL_SECS=1)
# shellcheck source=scripts/private-service.sh
. scripts/private-service.sh

used() { rc info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
sell() {
  curl -fsS -o /dev/null -X PUT "$BASE/v1/sales/$1" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"stock\": $((ORDERS * 2))}"
  SKU="$1" wrk -t 2 -c "$CONNECTIONS" -d 600s -s scripts/wrk/purchase.lua "$BASE" \
    >"$WORK_DIR/wrk.log" 2>&1 &
  local wrk_pid=$!
  until [ "$(rc hget "n:{$1}:sale" sold)" -ge "$ORDERS" ]; do sleep 0.2; done
  kill "$wrk_pid" 2>/dev/null; wait "$wrk_pid" 2>/dev/null || true
  until [ "$(rc xlen "n:{$1}:outbox")" = 0 ]; do sleep 0.2; done
}

start=$(used)
live="live-$$"; ended="ended-$$"
sell "$live"
sell "$ended"
sleep 1
with=$(used)
live_oid=$(rc hget "n:{$live}:sale" oid)
ended_oid=$(rc hget "n:{$ended}:sale" oid)
ended_sold=$(rc hget "n:{$ended}:sale" sold)
curl -fsS -o /dev/null -X POST "$BASE/v1/sales/$ended/end" -H "Authorization: Bearer $TOKEN"
until [ "$(rc --scan --pattern "n:{$ended}:*" | wc -l)" = 0 ]; do sleep 0.2; done
sleep 1
after=$(used)
echo "used_memory: $start before, $with with two sales of at least $ORDERS orders, $after once one ($ended_sold orders) was archived"
echo "  the archive freed $(( with - after )) bytes, $(echo "($with - $after) / $ended_sold" | bc -l | cut -c1-6) per order"

read_rps() {
  OID="$1" ORDERS="$ORDERS" TOKEN="$TOKEN" wrk -t 2 -c "$CONNECTIONS" -d "${READ_SECONDS}s" \
    -s scripts/wrk/read_order.lua "$BASE" >"$WORK_DIR/read.log" 2>&1 || true
  grep '^RESULT' "$WORK_DIR/read.log" || cat "$WORK_DIR/read.log"
}
echo "order reads, live sale (Redis):        $(read_rps "$live_oid")"
echo "order reads, archived sale (the record): $(read_rps "$ended_oid")"
