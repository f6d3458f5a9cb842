#!/usr/bin/env bash
# Runs every test against real servers: brings up Redis, NATS, PostgreSQL and the local
# Redis/NATS clusters when absent, then
# `cargo test`. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The Redis Cluster and NATS cluster of tests/api/cluster.rs (seconds to start).
scripts/cluster.sh up
exec cargo test --locked "$@"
