#!/usr/bin/env bash
# 10,000 live viewers on one replica while its sale sells (benches/live_viewers.rs): the
# service's RSS and CPU per change, and the change-to-viewer latency. Brings up the servers
# first; each viewer is a connection, so the file limit goes up.
#   LIVE_VIEWERS (10000)  LIVE_RATE (1000 purchases/s)  LIVE_SECONDS (10 per phase)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
ulimit -n 30000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec cargo bench --locked --bench live_viewers
