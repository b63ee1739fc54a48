//! Builds the admin console (`console/`, leptos compiled to WebAssembly) into `$OUT_DIR/console`,
//! which `src/console.rs` serves, so that `cargo run --release -p wasmq-server` on a machine with
//! only the Rust toolchain starts a broker with its console.
//!
//! The console is its own cargo project (a wasm32 build with its own lock file and profile), built
//! by a nested `cargo build` in `<target>/console`; `wasm-bindgen` runs as a library
//! (`wasm-bindgen-cli-support`, the same version as the console's `wasm-bindgen`), so no
//! separately installed CLI is needed. The wasm32 target is added with rustup when missing.
//! Cargo reruns this only when the console's sources (or the admin types it shares) change, so an
//! incremental broker build does not touch it. `WASMQ_CONSOLE=off` builds the broker without the
//! console (its `/` then says so).

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The console's sources, relative to the workspace root: a change to any of them rebuilds it.
const CONSOLE_INPUTS: &[&str] = &[
    "console/src",
    "console/Cargo.toml",
    "console/Cargo.lock",
    "console/index.html",
    "console/style.css",
    "console/boot.js",
    "broker/admin-types/src",
    "broker/admin-types/Cargo.toml",
];
/// Files served as they are, beside wasm-bindgen's output.
const STATIC_FILES: &[&str] = &["index.html", "style.css", "boot.js"];
/// The name of wasm-bindgen's output (`boot.js` imports `./wasmq_console.js`).
const OUT_NAME: &str = "wasmq_console";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("console");
    for input in CONSOLE_INPUTS {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=WASMQ_CONSOLE");
    if std::fs::exists(&out).unwrap_or(false) {
        std::fs::remove_dir_all(&out).unwrap_or_else(|e| fail(&format!("cannot clear {}: {e}", out.display())));
    }
    std::fs::create_dir_all(&out).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", out.display())));
    if std::env::var("WASMQ_CONSOLE").is_ok_and(|v| v == "off") {
        println!("cargo:rustc-env=WASMQ_CONSOLE_BUILT=0");
        return;
    }
    ensure_wasm_target();
    let wasm = build_console(&root);
    let bindgen = wasm_bindgen_cli_support::Bindgen::new().input_path(&wasm).web(true).and_then(|b| {
        // The library, unlike the CLI, leaves out the module's default URL by default; `init()`
        // in boot.js relies on it.
        b.omit_default_module_path(false)
            .typescript(false)
            .remove_name_section(true)
            .remove_producers_section(true)
            .out_name(OUT_NAME)
            .generate(&out)
    });
    if let Err(e) = bindgen {
        fail(&format!("wasm-bindgen on {}: {e:#}", wasm.display()));
    }
    for file in STATIC_FILES {
        let from = root.join("console").join(file);
        std::fs::copy(&from, out.join(file)).unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", from.display())));
    }
    println!("cargo:rustc-env=WASMQ_CONSOLE_BUILT=1");
}

/// Builds the console for wasm32 in `<target>/console` and returns the module's path.
fn build_console(root: &Path) -> PathBuf {
    let target_dir = console_target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "--target", WASM_TARGET, "--manifest-path"])
        .arg(root.join("console/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers are for the host (e.g. clippy's driver, a target CPU);
    // the console's build has its own.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().unwrap_or_else(|e| fail(&format!("cannot run cargo for the console: {e}")));
    if !output.status.success() {
        fail(&format!("building the console (console/, for {WASM_TARGET}) failed:\n{}", String::from_utf8_lossy(&output.stderr)));
    }
    target_dir.join(WASM_TARGET).join("release/wasmq-console.wasm")
}

/// `<target>/console`: `OUT_DIR` is `<target>/[<triple>/]<profile>/build/<package>-<hash>/out`.
fn console_target_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.ancestors().nth(4).unwrap_or_else(|| fail(&format!("unexpected OUT_DIR {}", out.display())));
    target.join("console")
}

/// Adds the wasm32 target with rustup when this toolchain lacks it.
fn ensure_wasm_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if sysroot.is_some_and(|s| s.join("lib/rustlib").join(WASM_TARGET).exists()) {
        return;
    }
    let added = Command::new("rustup").args(["target", "add", WASM_TARGET]).output();
    match added {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "the console needs the {WASM_TARGET} target and `rustup target add {WASM_TARGET}` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!(
            "the console needs the {WASM_TARGET} target, which this toolchain lacks, and rustup could not be run ({e}): \
             add the target, or build without the console with WASMQ_CONSOLE=off"
        )),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}\n(set WASMQ_CONSOLE=off to build the broker without its console)");
    std::process::exit(1)
}
