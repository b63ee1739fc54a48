# wasmq — one place for the commands CI and developers run.

# Where plugins built for the sandbox go (beside the native build, as the test kit puts them).
plugin_dir := env_var_or_default("CARGO_TARGET_DIR", "target") / "wasm-plugins"
plugin_out := plugin_dir / "wasm32-unknown-unknown/plugin"

# Start a development broker (127.0.0.1:7070, admin https://127.0.0.1:7071 with the console, data in ./data).
run:
    cargo run --release -p wasmq-server

# The console in headless chromium (playwright-core): the README's run command in a clean clone,
# then log in, topics, messages, groups, dark mode, read-only against a master and its slave.
console-e2e:
    bash scripts/console-e2e.sh

# Run the test suite (what the README and CI run).
test:
    cargo test --workspace --locked

# Everything CI checks: format, lints, tests.
ci:
    bash .ci/run

# Build the example plugins for the sandbox (target/wasm-plugins/wasm32-unknown-unknown/plugin/).
plugins:
    rustup target add wasm32-unknown-unknown
    cargo build --profile plugin --target wasm32-unknown-unknown --target-dir {{plugin_dir}} -p tenant-router -p json-order-key -p content-filter -p pii-guard

# All benchmarks: the store, then the broker and plugins (start a broker with `just run` first).
bench: bench-store bench-broker bench-plugins bench-transactions bench-grpc bench-replication

# Store throughput vs this disk's raw write bandwidth, group commit, recovery time.
bench-store *ARGS:
    cargo bench -p wasmq-store --bench store -- {{ARGS}}

# Broker produce / consume / end-to-end against a running broker, with the TLS ceiling.
bench-broker:
    cargo run --release -p wasmq-cli -- bench produce --duration 10
    cargo run --release -p wasmq-cli -- bench produce --concurrency 4 --duration 10
    cargo run --release -p wasmq-cli -- bench produce --duration 10 --batch 32
    cargo run --release -p wasmq-cli -- bench consume --concurrency 2
    cargo run --release -p wasmq-cli -- bench e2e --rate 20000 --duration 10

# The same against a fresh broker per command (started by the script), plus e2e at 80 k, 100 k
# and 20 % of the 1-producer rate.
bench-broker-fresh:
    cargo build --release -p wasmq-server -p wasmq-cli
    bash scripts/bench-broker-fresh.sh

# Plugin cost per message, then throughput with a router and a filter vs without (needs `just run`).
bench-plugins: plugins
    cargo bench -p wasmq-plugin-host --bench plugins
    cargo run --release -p wasmq-cli -- bench plugins --router {{plugin_out}}/tenant_router.wasm --filter {{plugin_out}}/content_filter.wasm

# Transactions (half message + commit) vs plain one-message sends, alternating rounds (needs `just run`).
bench-transactions:
    cargo run --release -p wasmq-cli -- bench transactions

# The RocketMQ 5 gRPC front end (one message per SendMessage; receive + ack) beside the native
# protocol's one-message sends, with the broker's CPU per message (needs `just run`).
bench-grpc:
    cargo run --release -p wasmq-cli -- bench grpc --broker-pid $(pgrep -n -x wasmq-broker)

# A master and a slave (started by the script): produce throughput under async and sync
# replication, and the slave's lag during the run.
bench-replication:
    bash scripts/bench-replication.sh

# The failover campaign with more cycles than CI runs (e.g. `just chaos 100`: 100 master kills,
# 50 pauses, then 50 network partitions): three controllers, a broker set of three under sync
# replication, a producer all along; prints the checker's figures and the write-unavailability
# windows. The partitions need root and iproute2 (network namespaces); skipped, saying so, else.
chaos CYCLES="100":
    WASMQ_FAILOVER_CYCLES={{CYCLES}} cargo test --release -p wasmq-tests --test it -- --nocapture --test-threads 1 controller::under_sync controller::masters_partitioned

# The SIGKILL crash test with more cycles than CI runs (e.g. `just crash 200`).
crash CYCLES="200":
    WASMQ_CRASH_CYCLES={{CYCLES}} cargo test --release -p wasmq-tests --test it store_crash -- --nocapture
