#!/usr/bin/env bash
# Produce throughput of a master with one slave under async and sync replication, and the
# slave's lag sampled during the run (release build; ports 7170-7173; data in a temp dir).
# Usage: scripts/bench-replication.sh   (= just bench-replication)
set -euo pipefail
cargo build --release -q -p wasmq-server -p wasmq-cli
T="${CARGO_TARGET_DIR:-target}/release"
B=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$B"' EXIT
for mode in async sync; do
  rm -rf "$B/m" "$B/s"; mkdir -p "$B/m" "$B/s"
  WASMQ_DATA_DIR=$B/m WASMQ_LISTEN=127.0.0.1:7170 WASMQ_ADMIN_LISTEN=127.0.0.1:7171 WASMQ_GRPC_LISTEN=127.0.0.1:7174 WASMQ_REPLICATION=$mode WASMQ_LOG=warn \
    "$T/wasmq-broker" > "$B/m.log" 2>&1 &
  M=$!; sleep 2
  TOKEN=$(cat "$B/m/admin-token")
  WASMQ_DATA_DIR=$B/s WASMQ_LISTEN=127.0.0.1:7172 WASMQ_ADMIN_LISTEN=127.0.0.1:7173 WASMQ_GRPC_LISTEN=127.0.0.1:7175 WASMQ_BROKER_ID=1 WASMQ_MASTER=127.0.0.1:7170 \
    WASMQ_TLS_CERT=$B/m/tls/server.pem WASMQ_TLS_KEY=$B/m/tls/server-key.pem WASMQ_PEER_CA=$B/m/tls/ca.pem \
    WASMQ_ADMIN_TOKEN=$TOKEN WASMQ_LOG=warn "$T/wasmq-broker" > "$B/s.log" 2>&1 &
  S=$!; sleep 2
  W=("$T/wasmq" --server 127.0.0.1:7170 --admin 127.0.0.1:7171 --ca "$B/m/tls/ca.pem" --token "$TOKEN")
  (for _ in $(seq 1 16); do
     sleep 0.5
     "${W[@]}" cluster status --json 2>/dev/null |
       python3 -c "import json,sys; s=json.load(sys.stdin)['brokers'][0]['slaves'][0]; print(s['lag_bytes'], s['lag_ms'])" 2>/dev/null || true
   done > "$B/lag-$mode.txt") &
  L=$!
  echo "## replication = $mode, one slave: wasmq bench produce --concurrency 4 --duration 8 --no-ceiling"
  "${W[@]}" bench produce --concurrency 4 --duration 8 --no-ceiling 2>/dev/null | tail -1
  wait "$L"
  sort -n "$B/lag-$mode.txt" | awk '{a[NR]=$0} END {print "slave lag during the run (bytes ms): p50", a[int(NR/2)+1], "| max", a[NR], "|", NR, "samples"}'
  kill "$S" "$M"; wait "$S" "$M" 2>/dev/null || true
done
