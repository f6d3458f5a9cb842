#!/usr/bin/env bash
# Quick start: brings up Redis and NATS (installing them when absent), then runs the service
# in the foreground with the repository's log4rs.yaml. Extra arguments go to `cargo run`.
# Configuration comes from FLASHSALE_* variables (see docs/settings.md); Ctrl-C stops it. Orders go
# to the durable JetStream services.sh runs (nats-server 2.15 with nats-server.conf:
# every write synced before it is acknowledged) unless FLASHSALE_NATS_URL says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
export FLASHSALE_NATS_URL=${FLASHSALE_NATS_URL:-nats://127.0.0.1:${DURABLE_NATS_PORT:-4225}}
# A key for the waiting rooms' tokens on this machine only: a deployment sets its own secret,
# the same on every replica.
export FLASHSALE_QUEUE_KEY=${FLASHSALE_QUEUE_KEY:-dev-only-queue-key}
exec cargo run --release --bin flashsale "$@"
