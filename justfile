# wasmq — one place for the commands CI and developers run.

# Run the test suite (what the README and CI run).
test:
    cargo test --workspace --locked

# Everything CI checks: format, lints, tests.
ci:
    bash .ci/run

# All benchmarks.
bench: bench-store

# Store throughput vs this disk's raw write bandwidth, group commit, recovery time.
bench-store *ARGS:
    cargo bench -p wasmq-store --bench store -- {{ARGS}}

# The SIGKILL crash test with more cycles than CI runs (e.g. `just crash 200`).
crash CYCLES="200":
    WASMQ_CRASH_CYCLES={{CYCLES}} cargo test --release -p wasmq-tests --test it store_crash -- --nocapture
