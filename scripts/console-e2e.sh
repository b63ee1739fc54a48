#!/usr/bin/env bash
# The console in a real browser (headless Debian chromium driven by playwright-core), twice:
# 1. the README's run command, verbatim, in a clean clone of HEAD (default ports 7070 and 7071,
#    data in the clone's ./data): the broker it builds and starts serves the console, and the
#    token it prints logs in (console/e2e/readme.mjs);
# 2. every page against a name server, a failover controller (one node) and a broker set under it
#    (master + slave, free ports, fresh data directories, a read-only token) built from this work
#    tree (console/e2e/console.mjs).
# Screenshots of every page go to $SHOTS (default target/console-shots).
# Needs: chromium (apt), node and npm (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM="${CHROMIUM:-$(command -v chromium || echo /usr/lib/chromium/chromium)}"
[ -x "$CHROMIUM" ] || { echo "needs Debian's chromium: apt-get install chromium" >&2; exit 1; }
T="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q -p wasmq-server -p wasmq-cli
rustup target add wasm32-unknown-unknown >/dev/null
cargo build -q --profile plugin --target wasm32-unknown-unknown --target-dir "$T/wasm-plugins" -p tenant-router
PLUGIN="$T/wasm-plugins/wasm32-unknown-unknown/plugin/tenant_router.wasm"
(cd console/e2e && npm ci --no-audit --no-fund --silent)

DATA=$(mktemp -d)
SHOTS="${SHOTS:-$PWD/target/console-shots}"
rm -rf "$SHOTS"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT

# Waits up to $3 seconds (default 30) for a line matching $2 in file $1, written by the last
# process started, which must stay up.
wait_for() {
  local pid=${PIDS[-1]}
  for _ in $(seq 1 $((${3:-30} * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "exited before '$2' appeared in $1:" >&2; cat "$1" "${1%.out}.err" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" "${1%.out}.err" >&2 || true; exit 1
}

# 1. The README's run command (the line marked "starts a dev broker"), taken from the README so
# the two cannot drift apart, run in a clean clone with no WASMQ_* settings.
RUN_CMD=$(sed -n 's/^\(cargo run [^#]*[^ #]\) *# starts a dev broker.*/\1/p' README.md)
[ -n "$RUN_CMD" ] || { echo "README.md has no line 'cargo run … # starts a dev broker'" >&2; exit 1; }
for port in 7070 7071 8081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken: the README's run command needs 7070, 7071 and 8081 free" >&2; exit 1
  fi
done
# A fixed place inside the target directory, so later runs reuse the build (cargo keys a
# package's artifacts by its path).
CLONE="$T/readme-run/wasmq"
rm -rf "$CLONE" && mkdir -p "$(dirname "$CLONE")"
git clone -q "$PWD" "$CLONE"
[ -z "$(git status --porcelain)" ] || echo "note: step 1 runs the committed HEAD; this work tree has changes" >&2
echo "step 1: $RUN_CMD (in a clean clone of $(git rev-parse --short HEAD))"
(cd "$CLONE" && exec env $(env | sed -n 's/^\(WASMQ_[A-Z0-9_]*\)=.*/-u \1/p') bash -c "exec $RUN_CMD") \
  > "$DATA/readme.out" 2> "$DATA/readme.err" &
PIDS+=($!)
# A cold build of the release broker and its console takes minutes.
wait_for "$DATA/readme.out" '^admin token' 2400
ADMIN=$(sed -n 's/.*(admin \(https:\/\/[^)]*\)).*/\1/p' "$DATA/readme.out") \
  TOKEN=$(sed -n 's/^admin token: //p' "$DATA/readme.out") SHOTS=$SHOTS CHROMIUM=$CHROMIUM node console/e2e/readme.mjs
kill "${PIDS[-1]}" && wait "${PIDS[-1]}" || true
unset 'PIDS[-1]'

"$T/debug/wasmq-broker" namesrv --listen 127.0.0.1:0 --data-dir "$DATA/ns" > "$DATA/ns.out" 2> "$DATA/ns.err" &
PIDS+=($!)
wait_for "$DATA/ns.out" '^ready'
NAMESRV=$(sed -n 's/^wasmq-namesrv listening on //p' "$DATA/ns.out")
CA=$(sed -n 's/^development CA: \([^ ]*\).*/\1/p' "$DATA/ns.out")

# Free ports for the processes that must know each other's addresses before they start: the
# controller node (named in its own --nodes) and the brokers under it (registered by address).
read -r CTL_PORT MASTER_PORT SLAVE_PORT < <(node -e '
  const net = require("net"); const ports = [];
  const next = () => { const s = net.createServer().listen(0, "127.0.0.1", () => {
    ports.push(s.address().port); s.close(() => ports.length < 3 ? next() : console.log(ports.join(" "))); }); };
  next();')
CONTROLLER=127.0.0.1:$CTL_PORT
"$T/debug/wasmq-broker" controller --id 1 --nodes "1=$CONTROLLER" --data-dir "$DATA/ctl" \
  --tls-cert "$DATA/ns/tls/server.pem" --tls-key "$DATA/ns/tls/server-key.pem" --peer-ca "$CA" > "$DATA/ctl.out" 2> "$DATA/ctl.err" &
PIDS+=($!)
wait_for "$DATA/ctl.out" '^ready'

TOKEN=admin-token-e2e-0123456789
READ_TOKEN=read-only-token-0123456789
# One broker set (broker-a) of the cluster e2e under the controller (the first to register is
# master), sharing the name server's certificate.
export WASMQ_TLS_CERT="$DATA/ns/tls/server.pem" WASMQ_TLS_KEY="$DATA/ns/tls/server-key.pem" WASMQ_PEER_CA="$CA" \
  WASMQ_NAMESRV="$NAMESRV" WASMQ_CONTROLLER="$CONTROLLER" WASMQ_CLUSTER=e2e WASMQ_BROKER_NAME=broker-a \
  WASMQ_REGISTER_INTERVAL_MS=1000 WASMQ_ADMIN_TOKEN=$TOKEN WASMQ_ADMIN_READ_TOKEN=$READ_TOKEN WASMQ_RETRY_DELAYS_MS=200 \
  WASMQ_LOG=warn WASMQ_ADMIN_LISTEN=127.0.0.1:0 WASMQ_GRPC_LISTEN=127.0.0.1:0 WASMQ_RETENTION_DISK_PERCENT=99
WASMQ_DATA_DIR="$DATA/master" WASMQ_LISTEN=127.0.0.1:$MASTER_PORT "$T/debug/wasmq-broker" > "$DATA/master.out" 2> "$DATA/master.err" &
PIDS+=($!)
wait_for "$DATA/master.out" '^admin token'
ADMIN=$(sed -n 's/.*(admin \(https:\/\/[^)]*\)).*/\1/p' "$DATA/master.out")
SERVER=$(sed -n 's/^wasmq-broker listening on \([^ ]*\) .*/\1/p' "$DATA/master.out")
WASMQ_DATA_DIR="$DATA/slave" WASMQ_LISTEN=127.0.0.1:$SLAVE_PORT WASMQ_BROKER_ID=1 "$T/debug/wasmq-broker" \
  > "$DATA/slave.out" 2> "$DATA/slave.err" &
PIDS+=($!)
wait_for "$DATA/slave.out" '^admin token'

ADMIN=$ADMIN TOKEN=$TOKEN READ_TOKEN=$READ_TOKEN SHOTS=$SHOTS SERVER=$SERVER CA=$CA CHROMIUM=$CHROMIUM \
  PLUGIN=$PLUGIN CLI="$T/debug/wasmq" SLAVE_PID=${PIDS[-1]} node console/e2e/console.mjs
