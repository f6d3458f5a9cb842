#!/usr/bin/env bash
# The alert rules and the dashboard (deploy/):
#   1. promtool checks the rules' syntax and runs their unit tests (alerts_test.yml: each
#      alert seen firing and not firing);
#   2. scripts/check_observability.py runs the service and a real Prometheus scraping it
#      under a short load, and evaluates every PromQL expression of the dashboard and of the
#      alert rules: each must parse and return data.
# promtool and prometheus come with Debian's prometheus package, which scripts/services.sh
# installs; the service is target/debug/flashsale (built by the test command).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null 2>&1 || { echo "check-observability: promtool missing (apt-get install prometheus)" >&2; exit 1; }
(cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml)
[ -x target/debug/flashsale ] || cargo build --locked -q --bin flashsale
python3 -c 'import yaml' 2>/dev/null || pip3 install --quiet --disable-pip-version-check pyyaml
python3 scripts/check_observability.py
