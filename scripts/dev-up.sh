#!/usr/bin/env bash
# Quick start: brings up Redis and NATS (installing them when absent), then runs the service
# in the foreground with the repository's log4rs.yaml. Extra arguments go to `cargo run`.
# Configuration comes from FLASHSALE_* variables (see README); Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo run --release --bin flashsale "$@"
