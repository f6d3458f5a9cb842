#!/usr/bin/env bash
# Validates the event contract, docs/asyncapi.json, with the AsyncAPI parser (npm
# @asyncapi/parser, installed into the state directory on first use): any error fails, and
# so does a warning, so the document stays clean. The API tests check every message they read
# against its schemas (tests/common/event_contract.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE_DIR=${FLASHSALE_STATE_DIR:-/var/tmp/flashsale}
PARSER_DIR="$STATE_DIR/asyncapi-parser"
if [ ! -f "$PARSER_DIR/node_modules/@asyncapi/parser/package.json" ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
  mkdir -p "$PARSER_DIR"
  npm install --silent --no-audit --no-fund --prefix "$PARSER_DIR" @asyncapi/parser@3 >/dev/null
fi
PARSER_DIR="$PARSER_DIR" node - docs/asyncapi.json <<'JS'
const fs = require('fs');
const { Parser } = require(process.env.PARSER_DIR + '/node_modules/@asyncapi/parser');
(async () => {
  const path = process.argv[2];
  const { document, diagnostics } = await new Parser().parse(fs.readFileSync(path, 'utf8'));
  // Severity 0 is an error, 1 a warning; hints (2, 3) are the style guide's taste.
  const problems = diagnostics.filter((d) => d.severity <= 1);
  for (const d of problems) {
    console.error(`${path}: ${d.severity === 0 ? 'error' : 'warning'} ${d.code}: ${d.message} at ${d.path.join('.')}`);
  }
  if (!document || problems.length > 0) process.exit(1);
  const channels = document.channels().all().map((c) => c.address());
  console.log(`asyncapi: ${path} valid (AsyncAPI ${document.version()}): ${channels.length} channels, ` +
    `${document.operations().all().length} operations, ${document.components().messages().all().length} messages`);
})().catch((e) => { console.error(e); process.exit(1); });
JS
