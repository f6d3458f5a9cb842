# Sourced by the benchmark scripts that measure Redis itself (memory-bench.sh,
# archive-bench.sh): the release binary on a redis-server of the script's own (no
# persistence, nothing else in it), against the local NATS, all gone when the script exits.
#
# Give it REDIS_PORT, PORT, TOKEN (the admin token), NAME (the run's stream and subject
# prefix; its bucket is KV_<NAME>_SALES) and SERVICE_ENV (an array of further
# `FLASHSALE_*=value` settings, may be empty). It sets WORK_DIR, BASE and rc (redis-cli on
# that server); the service's namespace is `n`.

export WRK_DIR=scripts/wrk
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
scripts/services.sh
cargo build --release --quiet --bin flashsale

WORK_DIR=$(mktemp -d)
BASE="http://127.0.0.1:$PORT"
# latency-tracking off: Redis 7 makes a histogram per command name on its first call, a
# fixed cost of the commands used, which would read as memory of the data measured.
redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK_DIR" \
  --latency-tracking no --daemonize no >"$WORK_DIR/redis.log" 2>&1 &
REDIS_PID=$!
rc() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 50); do rc ping >/dev/null 2>&1 && break; sleep 0.1; done

env FLASHSALE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" FLASHSALE_BIND="127.0.0.1:$PORT" \
  FLASHSALE_NAMESPACE="n" FLASHSALE_ADMIN_TOKEN="$TOKEN" FLASHSALE_CONFIRM=redis \
  FLASHSALE_STREAM="$NAME" FLASHSALE_SUBJECT_PREFIX="$NAME" FLASHSALE_DEFAULT_SKU="kill-$NAME" \
  "${SERVICE_ENV[@]}" \
  bash -c "cd '$WORK_DIR' && exec '$(pwd)/target/release/flashsale'" >"$WORK_DIR/service.log" 2>&1 &
SERVICE_PID=$!
cleanup() {
  kill "$SERVICE_PID" "$REDIS_PID" 2>/dev/null || true
  python3 -c 'import sys; sys.path.insert(0, "scripts"); import check_observability as c
c.delete_streams("nats://127.0.0.1:4222", sys.argv[1:])' "$NAME" "KV_${NAME}_SALES" || true
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
