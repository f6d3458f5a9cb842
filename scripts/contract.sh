#!/usr/bin/env bash
# Fuzzes the live service against its own OpenAPI document with schemathesis: every
# operation, every check (no 5xx, every status, header and body as documented, bad input
# refused, good input accepted), stateful sequences along the document's links.
#
# Starts the service (target/debug/flashsale, built here if absent) on a free port, in a
# namespace and stream of its own, against the servers of scripts/services.sh; removes its
# Redis keys and stream afterwards. schemathesis comes from PyPI into a virtualenv in the
# state directory (once). Extra arguments go to `st run`.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
VENV="$STATE_DIR/schemathesis"
log() { echo "contract: $*" >&2; }

if [ ! -x "$VENV/bin/st" ]; then
  log "installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis
fi
[ -x target/debug/flashsale ] || cargo build --locked -q

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run=$$-$(date +%s)
export FLASHSALE_BIND="127.0.0.1:$port"
export FLASHSALE_NAMESPACE="fscontract-$run"
export FLASHSALE_STREAM="FSCONTRACT-$run"
export FLASHSALE_SUBJECT_PREFIX="fscontract-$run"
export FLASHSALE_ADMIN_TOKEN="contract-admin-token"
unset FLASHSALE_DATABASE_URL

# From a scratch directory: no log4rs.yaml there, so it logs to the console (the file below).
(cd "$STATE_DIR" && exec "$OLDPWD/target/debug/flashsale") >"$STATE_DIR/contract-service.log" 2>&1 &
service=$!
cleanup() {
  kill "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  # Fuzzed user ids put quotes in key names: NUL-separated, no quoting.
  redis-cli --scan --pattern "$FLASHSALE_NAMESPACE:*" | tr '\n' '\0' |
    xargs -0 -r -n 100 redis-cli unlink >/dev/null || true
  python3 - "$FLASHSALE_STREAM" <<'PY' || true
import socket, sys
# JetStream API: delete the run's stream and its definitions bucket ($JS.API.STREAM.DELETE.*).
s = socket.create_connection(("127.0.0.1", 4222)); s.recv(4096)
s.sendall(b'CONNECT {"verbose":false}\r\n')
for name in (sys.argv[1], "KV_" + sys.argv[1] + "_SALES"):
    s.sendall(f"PUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\n".encode())
s.sendall(b"PING\r\n"); s.recv(4096)
PY
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null ||
  { log "the service did not start:"; tail -5 "$STATE_DIR/contract-service.log" >&2; exit 1; }

# A sale for the examples and the stateful runs to buy from.
curl -fs -X PUT "http://127.0.0.1:$port/v1/sales/contract" -H "Authorization: Bearer $FLASHSALE_ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"stock": 1000000, "payment_timeout_secs": 600}' >/dev/null

log "schemathesis against 127.0.0.1:$port"
# One worker: with two, schemathesis on CPython 3.11 sometimes fails inside itself
# ("AST constructor recursion depth mismatch"), not in what it tests.
"$VENV/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $FLASHSALE_ADMIN_TOKEN" \
  --max-examples "${CONTRACT_MAX_EXAMPLES:-50}" \
  --workers 1 \
  --no-color \
  "$@"
