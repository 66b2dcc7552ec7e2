#!/usr/bin/env bash
# Drop the echo test plugin into a running daemon (started by `cargo xtask run`)
# and run one task through it. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${WASMHIVE_URL:-http://127.0.0.1:8080}
cp target/plugins/fixtures/echo.wasm target/plugins/.echo.tmp
mv target/plugins/.echo.tmp target/plugins/echo.wasm   # write-then-rename: one clean reload
sleep 0.5
curl -s "$URL/api/v1/plugins"; echo
curl -s -X POST "$URL/api/v1/tasks?wait=10" -H 'Content-Type: application/json' \
  -d '{"kind":"echo","payload":{"hello":"world"},"priority":"HIGH"}'; echo
