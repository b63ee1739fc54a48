#!/usr/bin/env bash
# Builds the admin console (console/, leptos compiled to WebAssembly) into console/dist, which
# the broker serves at / of its admin port (embedded by release builds: build the broker after).
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli of the same version as the
# console's wasm-bindgen crate (installed here if missing; `cargo install` without --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
WB_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' console/Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
rustup target add wasm32-unknown-unknown >/dev/null
# Installed once into a cache outside the clone (CI reuses it), unless one of this version is
# already on the PATH.
TOOLS="${WASMQ_TOOLS:-${HOME:-/tmp}/.cache/wasmq/tools}"
export PATH="$TOOLS/bin:$PATH"
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WB_VERSION"; then
  echo "installing wasm-bindgen-cli $WB_VERSION into $TOOLS"
  cargo install --root "$TOOLS" wasm-bindgen-cli --version "$WB_VERSION"
fi
TARGET="${CARGO_TARGET_DIR:-$PWD/target}/console"
CARGO_TARGET_DIR="$TARGET" cargo build --release --locked --target wasm32-unknown-unknown --manifest-path console/Cargo.toml
rm -rf console/dist && mkdir -p console/dist
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-name wasmq_console --out-dir console/dist "$TARGET/wasm32-unknown-unknown/release/wasmq-console.wasm"
cp console/index.html console/style.css console/boot.js console/dist/
ls -l console/dist
# The broker embeds (release) or finds (debug) these files when it is compiled: make the next
# broker build pick them up.
touch broker/admin-api/src/console.rs
