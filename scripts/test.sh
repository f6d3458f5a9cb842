#!/usr/bin/env bash
# Runs every test against real servers: brings up Redis, NATS, PostgreSQL and the local
# Redis/NATS clusters when absent, validates the event contract (docs/asyncapi.json, with
# the AsyncAPI parser), then `cargo test` three times:
#   1. every test on the single Redis and the durable NATS (nats-server 2.15 with
#      nats-server.conf, as shipped: FLASHSALE_TEST_NATS_URL), and the cluster tests on the
#      clusters;
#   2. the whole API suite again on the clusters (FLASHSALE_TEST_TOPOLOGY=cluster: Redis
#      Cluster 3+3, NATS 3 nodes with streams at R3), but for the cluster tests, which ran in
#      1 and measure the masters' load (the rest of the suite would skew it), and the
#      failover tests, which build clusters of their own.
#   3. the API suite's modules that publish or read the stream, again on Debian's nats-server
#      2.9 (no atomic batches: the relay sends one message at a time);
#   4. scripts/contract.sh: schemathesis against the live service and its OpenAPI document
#      (skipped when a test name filter is given);
#   5. scripts/check-observability.sh: promtool on the alert rules and their unit tests, and
#      every PromQL expression of the dashboard and the alerts against a real Prometheus;
#   6. scripts/container-test.sh: the Dockerfile built and run with podman.
# The fault tests (tests/faults: Redis and NATS paused under 1,000 connections, the chaos
# suite) run the service as processes of its own; FLASHSALE_TEST_BINARY points them at
# another build (a release one for the README's closed-loop figures).
# An extra argument is a test name filter for both runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The event contract: docs/asyncapi.json, parsed by the AsyncAPI parser.
scripts/asyncapi-check.sh
# The Redis Cluster and NATS cluster (seconds to start).
scripts/cluster.sh up
# A thousand client connections beside the service's own.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FLASHSALE_TEST_NATS_URL=nats://127.0.0.1:${DURABLE_NATS_PORT:-4225} cargo test --locked "$@"
echo "test.sh: the API suite on the cluster topology" >&2
FLASHSALE_TEST_TOPOLOGY=cluster cargo test --locked --test api "$@" -- --skip cluster:: --skip failover::
echo "test.sh: the API suite on Debian's nats-server (no atomic batches)" >&2
# Only what differs there: the stream made without atomic batches, and the relay's delivery
# one message at a time. The handlers publish one plain message an entry on every server, and
# the other modules never reach NATS beyond that (or bring servers of their own).
FLASHSALE_TEST_NATS_URL=nats://127.0.0.1:${NATS_PORT:-4222} cargo test --locked --test api "$@" -- \
  --skip cluster:: --skip failover:: --skip contract:: --skip durable:: --skip health:: \
  --skip live:: --skip page:: --skip rate_limits:: --skip round_trips:: --skip sales:: \
  --skip script:: --skip seed:: --skip settings:: --skip tickets:: --skip validation::
if [ "$#" -eq 0 ]; then scripts/contract.sh; scripts/check-observability.sh; scripts/container-test.sh; fi
