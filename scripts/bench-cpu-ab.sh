#!/usr/bin/env bash
# Compares two broker binaries by the broker's CPU time per message, which is far steadier here
# than throughput (±25 % between identical runs). Rounds alternate A and B, each on a fresh data
# directory; the broker's utime+stime (from /proc/PID/stat) over the workload is divided by the
# messages produced; the client's (utime + stime of the `wasmq` process) likewise.
#   scripts/bench-cpu-ab.sh ROUNDS OLD NEW produce [wasmq bench produce args]
#   scripts/bench-cpu-ab.sh ROUNDS OLD NEW consume   (2 M messages from 4 producers, then a catch-up consume;
#                                                    2 GB: all still cached under the default cached_bytes_behind)
# OLD and NEW are broker binaries, or BROKER,CLI pairs to compare clients too; the CLI
# defaults to the release `wasmq` ($CARGO_TARGET_DIR/release/wasmq).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0" >&2; exit 2; }
ROUNDS=$1 A=$2 B=$3 MODE=$4
shift 4
DEFAULT_CLI="${CARGO_TARGET_DIR:-$PWD/target}/release/wasmq"
WORK=$(mktemp -d)
P=
# A failed run must not leave its broker holding the port for the next one.
trap '[ -n "$P" ] && kill "$P" 2>/dev/null && wait "$P" 2>/dev/null; rm -rf "$WORK"' EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_msg() { awk -v c="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", c / hz * 1e6 / n }'; }
# The client's CPU seconds (user + system) of the last timed run, per message.
client_per_msg() { awk -v n="$1" '{ printf "%.2f", ($1 + $2) * 1e6 / n }' "$WORK/time"; }
for _ in $(seq 1 "$ROUNDS"); do
  for PAIR in "$A" "$B"; do
    BIN=${PAIR%%,*} CLI=$DEFAULT_CLI
    [ "$PAIR" = "$BIN" ] || CLI=${PAIR#*,}
    LABEL=$(basename "$BIN")
    [ "$CLI" = "$DEFAULT_CLI" ] || LABEL="$LABEL+$(basename "$CLI")"
    rm -rf "$WORK/data"
    (cd "$WORK" && WASMQ_LOG=warn exec "$BIN" > out 2> err) &
    P=$!
    for _ in $(seq 1 100); do grep -q "admin token" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
    ca="$WORK/data/tls/ca.pem"
    if [ "$MODE" = produce ]; then
      c0=$(cpu $P)
      o=$(/usr/bin/time -f "%U %S" -o "$WORK/time" "$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench produce --no-ceiling "$@" 2>&1)
      c1=$(cpu $P)
      n=$(echo "$o" | sed -n 's/^produced \([0-9]*\) messages.*/\1/p')
      echo "$LABEL $(echo "$o" | tail -1)  broker $(per_msg $((c1 - c0)) "$n") client $(client_per_msg "$n") us/msg"
    else
      o=$("$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench produce --no-ceiling --count 2000000 --duration 60 --concurrency 4 2>&1)
      n=$(echo "$o" | sed -n 's/^produced \([0-9]*\) messages.*/\1/p')
      c1=$(cpu $P)
      oc=$(/usr/bin/time -f "%U %S" -o "$WORK/time" "$CLI" --ca "$ca" --token "$(cat "$WORK/data/admin-token")" bench consume --no-ceiling --concurrency 2 2>&1)
      c2=$(cpu $P)
      echo "$LABEL $(echo "$oc" | tail -1)  broker $(per_msg $((c2 - c1)) "$n") client $(client_per_msg "$n") us/msg"
    fi
    kill $P; wait $P 2>/dev/null || true
    P=
  done
done
