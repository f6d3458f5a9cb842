#!/usr/bin/env bash
# Runs every test against real servers: brings up Redis and NATS when absent, then
# `cargo test`. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo test --locked "$@"
