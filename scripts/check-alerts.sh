#!/usr/bin/env bash
# The alert rules (deploy/prometheus/alerts.yml): promtool checks their syntax, then runs
# their unit tests (alerts_test.yml: each alert seen firing and not firing). promtool comes
# with Debian's prometheus package, which scripts/services.sh installs.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
command -v promtool >/dev/null 2>&1 || { echo "check-alerts: promtool missing (apt-get install prometheus)" >&2; exit 1; }
promtool check rules alerts.yml
promtool test rules alerts_test.yml
