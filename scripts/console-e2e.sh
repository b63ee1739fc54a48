#!/usr/bin/env bash
# Builds the console and the broker, starts the broker (ports picked by the OS, fresh data
# directory, a read-only token), and runs the browser test (console/e2e/console.mjs) in
# headless Debian chromium with playwright-core. Screenshots go to $SHOTS (default
# target/console-shots). Needs: chromium (apt), node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/lib/chromium/chromium >/dev/null || { echo "needs Debian's chromium: apt-get install chromium" >&2; exit 1; }
bash scripts/build-console.sh >/dev/null
cargo build -q -p wasmq-server -p wasmq-cli
(cd console/e2e && npm install --no-audit --no-fund --silent)
DATA=$(mktemp -d)
SHOTS="${SHOTS:-$PWD/target/console-shots}"
READ_TOKEN=read-only-token-0123456789
WASMQ_DATA_DIR=$DATA WASMQ_LISTEN=127.0.0.1:0 WASMQ_ADMIN_LISTEN=127.0.0.1:0 WASMQ_ADMIN_READ_TOKEN=$READ_TOKEN WASMQ_LOG=warn \
  "${CARGO_TARGET_DIR:-target}/debug/wasmq-broker" > "$DATA/broker.out" 2> "$DATA/broker.err" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do grep -q "admin token" "$DATA/broker.out" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(sed -n 's/.*(admin \(https:\/\/[^)]*\)).*/\1/p' "$DATA/broker.out")
TOKEN=$(sed -n 's/^admin token: //p' "$DATA/broker.out")
SERVER=$(sed -n 's/^wasmq-broker listening on \([^ ]*\) .*/\1/p' "$DATA/broker.out")
ADMIN=$ADMIN TOKEN=$TOKEN READ_TOKEN=$READ_TOKEN SHOTS=$SHOTS SERVER=$SERVER CA=$DATA/tls/ca.pem \
  CLI="${CARGO_TARGET_DIR:-target}/debug/wasmq" node console/e2e/console.mjs
