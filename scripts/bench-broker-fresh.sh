#!/usr/bin/env bash
# The broker benchmark commands of `just bench-broker`, each against a fresh broker on an empty
# data directory (so no run reads another's data or inherits its page cache), plus e2e at 80 k
# and 100 k msgs/s and at 20 % of the first run's 1-producer rate (the issue's "moderate
# rate"). Prints each command and its summary lines, and what the disk holding the data wrote
# meanwhile and a 1 GiB write probe of that disk before and after (on this VM the disk swung
# between 0.4 and 1.8 GB/s in one morning; when slow it bounds produce), and the time the
# hypervisor kept this VM's vCPUs from running ("steal", /proc/stat) during each command, with
# its longest 100 ms sample: a stall the guest cannot see shows up there.
#   scripts/bench-broker-fresh.sh [BROKER [CLI]]   (default: the release binaries)
#   E2E_RUNS=RATE:N scripts/bench-broker-fresh.sh ...   only e2e at RATE msgs/s, N times
set -euo pipefail
DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"
BROKER=${1:-$DIR/wasmq-broker} CLI=${2:-$DIR/wasmq}
WORK=$(mktemp -d)
P= SP=
DISK=$(basename "$(df --output=source "$WORK" | tail -1)")
# steal and iowait of all CPUs, in ms, from /proc/stat's first line (builtins only: sampled
# every 100 ms beside the benchmark)
MS_PER_TICK=$((1000 / $(getconf CLK_TCK)))
ticks() {
  local _c _u _n _s _i io _q _sq st _rest
  read -r _c _u _n _s _i io _q _sq st _rest < /proc/stat
  echo "$((st * MS_PER_TICK)) $((io * MS_PER_TICK))"
}
# samples steal every 100 ms until killed; prints the largest sample, in ms
steal_sampler() {
  local prev cur max=0
  read -r prev _ <<< "$(ticks)"
  trap 'echo "$max"; exit 0' TERM
  while sleep 0.1; do
    read -r cur _ <<< "$(ticks)"
    [ $((cur - prev)) -gt "$max" ] && max=$((cur - prev))
    prev=$cur
  done
}
written() { awk -v d="$DISK" '$3 == d { printf "%.0f\n", $10 * 512 }' /proc/diskstats; }
trap '[ -n "$SP" ] && kill "$SP" 2>/dev/null; [ -n "$P" ] && { kill "$P"; wait "$P"; } 2>/dev/null; rm -rf "$WORK"' EXIT
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
  local w0 t0 k0 k1
  w0=$(written) t0=$(date +%s.%N) k0=($(ticks))
  steal_sampler > "$WORK/steal-max" &
  SP=$!
  "$CLI" "${a[@]}" bench "$@" 2>&1 | grep -E "^(TLS ceiling|warm-up|produce|consume|e2e|late|deliveries|produced|host steal)" | tee -a "$WORK/summary"
  awk -v d="$DISK" -v w="$(( $(written) - w0 ))" -v t0="$t0" -v t1="$(date +%s.%N)" \
    'BEGIN { printf "disk %s: %.0f MB written, %.0f MB/s over the command\n", d, w / 1e6, w / 1e6 / (t1 - t0) }'
  k1=($(ticks))
  kill "$SP"; wait "$SP" 2>/dev/null || true
  SP=
  echo "host: steal $((k1[0] - k0[0])) ms (at most $(cat "$WORK/steal-max") ms in a 100 ms sample), iowait $((k1[1] - k0[1])) ms, over the command ($(nproc) CPUs)"
  kill "$P"; wait "$P" 2>/dev/null || true
  P=
}
probe_disk() {
  echo "disk $DISK probe: $(dd if=/dev/zero of="$WORK/probe" bs=1M count=1024 conv=fdatasync 2>&1 | awk -F', ' 'END { print $NF }') (1 GiB, fdatasync)"
  rm -f "$WORK/probe"
}
# A 4-producer run writes ~11 GB: above the broker's disk limit for retention (75 % by
# default) retention deletes segments while the benchmark runs.
USE=$(df --output=pcent "$WORK" | tail -1 | tr -dc 0-9)
echo "disk $DISK use before the set: $USE %"
[ "$USE" -le 60 ] || echo "warning: over 60 % full; a produce run may cross the retention limit and delete segments as it runs"
probe_disk
if [ -n "${E2E_RUNS:-}" ]; then
  for _ in $(seq 1 "${E2E_RUNS#*:}"); do run e2e --rate "${E2E_RUNS%:*}" --duration 10; done
  probe_disk
  exit 0
fi
run produce --duration 10
run produce --concurrency 4 --duration 10
run produce --duration 10 --batch 32
run consume --concurrency 2
run e2e --rate 20000 --duration 10
run e2e --rate 80000 --duration 10
run e2e --rate 100000 --duration 10
MAX=$(awk '/^produce: / { print $2; exit }' "$WORK/summary")
run e2e --rate $((MAX / 5 / 1000 * 1000)) --duration 10
probe_disk
