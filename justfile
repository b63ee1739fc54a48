# wasmq — one place for the commands CI and developers run.

# Start a development broker (127.0.0.1:7070, admin https://127.0.0.1:7071, data in ./data).
run:
    cargo run --release -p wasmq-server

# Run the test suite (what the README and CI run).
test:
    cargo test --workspace --locked

# Everything CI checks: format, lints, tests.
ci:
    bash .ci/run

# All benchmarks: the store, then the broker (start one with `just run` first).
bench: bench-store bench-broker

# Store throughput vs this disk's raw write bandwidth, group commit, recovery time.
bench-store *ARGS:
    cargo bench -p wasmq-store --bench store -- {{ARGS}}

# Broker produce / consume / end-to-end against a running broker, with the TLS ceiling.
bench-broker:
    cargo run --release -p wasmq-cli -- bench produce --duration 10
    cargo run --release -p wasmq-cli -- bench produce --concurrency 4 --duration 10
    cargo run --release -p wasmq-cli -- bench consume --concurrency 2
    cargo run --release -p wasmq-cli -- bench e2e --rate 20000 --duration 10

# The SIGKILL crash test with more cycles than CI runs (e.g. `just crash 200`).
crash CYCLES="200":
    WASMQ_CRASH_CYCLES={{CYCLES}} cargo test --release -p wasmq-tests --test it store_crash -- --nocapture
