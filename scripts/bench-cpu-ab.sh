#!/usr/bin/env bash
# Compares two broker binaries by the broker's CPU time per message, which is far steadier here
# than throughput (±25 % between identical runs). Rounds alternate A and B, each on a fresh data
# directory; the broker's utime+stime (from /proc/PID/stat) over the workload is divided by the
# messages produced.
#   scripts/bench-cpu-ab.sh ROUNDS OLD_BROKER NEW_BROKER produce [wasmq bench produce args]
#   scripts/bench-cpu-ab.sh ROUNDS OLD_BROKER NEW_BROKER consume   (produce 6 s with 4 producers, then a catch-up consume)
# Needs a release `wasmq` CLI ($CARGO_TARGET_DIR/release/wasmq).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,8p "$0" >&2; exit 2; }
ROUNDS=$1 A=$2 B=$3 MODE=$4
shift 4
CLI="${CARGO_TARGET_DIR:-$PWD/target}/release/wasmq"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_msg() { awk -v c="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", c / hz * 1e6 / n }'; }
for _ in $(seq 1 "$ROUNDS"); do
  for BIN in "$A" "$B"; do
    rm -rf "$WORK/data"
    (cd "$WORK" && WASMQ_LOG=warn exec "$BIN" > out 2> err) &
    P=$!
    for _ in $(seq 1 100); do grep -q "admin token" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
    ca="$WORK/data/tls/ca.pem"
    if [ "$MODE" = produce ]; then
      c0=$(cpu $P)
      o=$("$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench produce --no-ceiling "$@" 2>&1)
      c1=$(cpu $P)
      n=$(echo "$o" | sed -n 's/^produced \([0-9]*\) messages.*/\1/p')
      echo "$(basename "$BIN") $(echo "$o" | tail -1)  broker $(per_msg $((c1 - c0)) "$n") us/msg"
    else
      o=$("$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench produce --no-ceiling --duration 6 --concurrency 4 2>&1)
      n=$(echo "$o" | sed -n 's/^produced \([0-9]*\) messages.*/\1/p')
      c1=$(cpu $P)
      oc=$("$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench consume --no-ceiling --concurrency 2 2>&1)
      c2=$(cpu $P)
      echo "$(basename "$BIN") $(echo "$oc" | tail -1)  broker $(per_msg $((c2 - c1)) "$n") us/msg"
    fi
    kill $P; wait $P 2>/dev/null || true
  done
done
