#!/usr/bin/env bash
# The broker benchmark commands of `just bench-broker`, each against a fresh broker on an empty
# data directory (so no run reads another's data or inherits its page cache), plus e2e at 80 k
# and 100 k msgs/s and at 20 % of the first run's 1-producer rate (the issue's "moderate
# rate"). Prints each command and its summary lines.
#   scripts/bench-broker-fresh.sh [BROKER [CLI]]   (default: the release binaries)
set -euo pipefail
DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"
BROKER=${1:-$DIR/wasmq-broker} CLI=${2:-$DIR/wasmq}
WORK=$(mktemp -d)
P=
trap '[ -n "$P" ] && kill "$P" 2>/dev/null; rm -rf "$WORK"' EXIT
run() {
  rm -rf "$WORK/data"
  (cd "$WORK" && WASMQ_LOG=warn exec "$BROKER" > out 2> err) &
  P=$!
  for _ in $(seq 1 100); do grep -q "admin token" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
  local a=(--ca "$WORK/data/tls/ca.pem" --token "$(cat "$WORK/data/admin-token")")
  echo "## wasmq bench $*"
  if [ "$1" = consume ]; then
    "$CLI" "${a[@]}" bench produce --no-ceiling --count 1000000 --duration 60 > /dev/null 2>&1
  fi
  "$CLI" "${a[@]}" bench "$@" 2>&1 | grep -E "^(TLS ceiling|produce|consume|e2e|late|produced)" | tee -a "$WORK/summary"
  kill "$P"; wait "$P" 2>/dev/null || true
  P=
}
run produce --duration 10
run produce --concurrency 4 --duration 10
run produce --duration 10 --batch 32
run consume --concurrency 2
run e2e --rate 20000 --duration 10
run e2e --rate 80000 --duration 10
run e2e --rate 100000 --duration 10
MAX=$(awk '/^produce: / { print $2; exit }' "$WORK/summary")
run e2e --rate $((MAX / 5 / 1000 * 1000)) --duration 10
