//! Test a built plugin in the broker's own plugin runtime.
//!
//! ```no_run
//! use wasmq_plugin_testkit::{Harness, MessageBuf, Role, Route};
//!
//! let wasm = wasmq_plugin_testkit::build_plugin(env!("CARGO_MANIFEST_DIR"))?;
//! let mut run = Harness::load(&wasm)?.attach(Role::Router, &[("tenants", "acme=0-3")])?;
//! let report = run.route(8, &[MessageBuf::new().property("tenant", "acme").key("k1")])?;
//! assert!(matches!(report.decisions[0], Route::Queue(0..=3)));
//! println!("{} instructions per message, {} bytes peak memory", report.fuel_per_message, report.peak_memory);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Harness`] uses the same `wasmq-plugin-host` crate as the broker (same sandbox limits,
//! same batch encoding) with instruction counting (fuel) switched on, and captures the
//! plugin's log lines instead of sending them to the broker's log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

pub use wasmq_plugin_host::{
    Attachment, Batch, BatchBuilder, CallError, Delivery, Fields, Limits, LoadError, LogLine, Manifest, OrderingKey, PLUGIN_BYTES_MAX,
    Plugin, Role, Route, Runtime, Session, TrapKind, key_hash,
};
pub use wasmq_plugin_sdk::MessageBuf;

/// The target plugins are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Builds the plugin crate at `crate_dir` (its directory, holding `Cargo.toml`) for
/// [`TARGET`] (with the `plugin` profile inside the wasmq workspace, else `--release`) and
/// returns the `.wasm` path. Builds go to
/// `$CARGO_TARGET_DIR/wasm-plugins` (else `target/wasm-plugins` beside the workspace), so they
/// do not disturb the native build. Installs the target with rustup if it is missing.
/// Results are remembered for the life of the process.
///
/// # Errors
/// The build failed; the message holds cargo's output.
pub fn build_plugin(crate_dir: impl AsRef<Path>) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let dir = crate_dir.as_ref().to_path_buf();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = built.get(&dir) {
        return Ok(p.clone());
    }
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let parsed: toml::Table = text.parse().map_err(|e| format!("{}: {e}", manifest.display()))?;
    let package = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{}: no package name", manifest.display()))?
        .to_owned();
    let root = workspace_root(&dir);
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("wasm-plugins");
    // wasmq's workspace has a `plugin` profile; a plugin of one's own builds with `--release`.
    let has_plugin_profile = std::fs::read_to_string(root.join("Cargo.toml")).is_ok_and(|t| t.contains("[profile.plugin]"));
    let profile = if has_plugin_profile { "plugin" } else { "release" };
    let run = || {
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--profile", profile, "--quiet", "--target", TARGET, "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))
    };
    let mut out = run()?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(TARGET) {
        // Most likely the target is not installed; rustup can add it from its own servers.
        let _ = Command::new("rustup").args(["target", "add", TARGET]).output();
        out = run()?;
    }
    if !out.status.success() {
        return Err(format!("building {package} for {TARGET} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let wasm = target_dir.join(TARGET).join(profile).join(format!("{}.wasm", package.replace('-', "_")));
    if !wasm.exists() {
        return Err(format!("{} was not produced (is the crate a cdylib?)", wasm.display()));
    }
    built.insert(dir, wasm.clone());
    Ok(wasm)
}

fn workspace_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .filter(|d| std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]")))
        .last()
        .unwrap_or(dir)
        .to_path_buf()
}

/// A loaded plugin in a fuel-counting runtime with the broker's default limits.
#[derive(Debug, Clone)]
pub struct Harness {
    plugin: Plugin,
}

impl Harness {
    /// Loads a `.wasm` file (as the broker does on upload: validation, componentizing, the
    /// `init` dry run).
    ///
    /// # Errors
    /// The file cannot be read, or the broker would refuse it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        Self::from_bytes(&std::fs::read(path)?, Limits::default())
    }

    /// Loads plugin bytes under the given limits (fuel counting is switched on).
    ///
    /// # Errors
    /// As [`Harness::load`].
    pub fn from_bytes(bytes: &[u8], limits: Limits) -> Result<Self, LoadError> {
        static RUNTIMES: OnceLock<Mutex<Vec<(String, Runtime)>>> = OnceLock::new();
        let limits = Limits { fuel: true, instances_max: limits.instances_max.min(32), ..limits };
        let key = format!("{limits:?}");
        let runtime = {
            let mut rs = RUNTIMES.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match rs.iter().find(|(k, _)| *k == key) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = Runtime::new(limits, None)?;
                    rs.push((key, r.clone()));
                    r
                }
            }
        };
        Ok(Self { plugin: runtime.load(bytes)? })
    }

    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        self.plugin.manifest()
    }

    #[must_use]
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Makes an instance attached in `role` with `config` (runs `init`).
    ///
    /// # Errors
    /// The plugin refuses the configuration, lacks the role, or traps.
    pub fn attach(&self, role: Role, config: &[(&str, &str)]) -> Result<Run, CallError> {
        if !self.plugin.has_role(role) {
            return Err(CallError::Init(format!("{} does not declare this role", self.plugin.label())));
        }
        let attachment = Attachment {
            role,
            topic: "test".into(),
            group: (role == Role::Filter).then(|| "test-group".into()),
            config: config.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        let mut session = Session::with_counters(&self.plugin, &attachment, Arc::default(), true)?;
        let init_logs = session.take_logs();
        let needs = session.needs();
        Ok(Run { session, attachment, needs, init_logs })
    }
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct Report<D> {
    pub decisions: Vec<D>,
    /// Lines the plugin logged during the call.
    pub logs: Vec<LogLine>,
    /// Instructions (fuel) the call used, and per message.
    pub fuel: u64,
    pub fuel_per_message: f64,
    /// The instance's largest linear memory so far, in bytes.
    pub peak_memory: usize,
}

/// An attached instance. After a trap it is replaced by a fresh one (as the broker does), so
/// a test can go on calling.
#[derive(Debug)]
pub struct Run {
    session: Session,
    attachment: Attachment,
    needs: Fields,
    /// Lines logged by `init`.
    pub init_logs: Vec<LogLine>,
}

impl Run {
    /// The columnar batch the broker would pass for these messages (only the plugin's needs).
    #[must_use]
    pub fn batch(&self, messages: &[MessageBuf]) -> Batch {
        let mut b = BatchBuilder::new(self.needs);
        for m in messages {
            let v = m.view();
            b.push(v.timestamp_ms(), v.key().unwrap_or_default(), v.tags().as_bytes(), v.properties(), v.body());
        }
        b.finish()
    }

    fn report<D>(&mut self, n: usize, r: Result<Vec<D>, CallError>) -> Result<Report<D>, CallError> {
        let logs = self.session.take_logs();
        let out = r.map(|decisions| Report {
            decisions,
            logs,
            fuel: self.session.last_fuel(),
            fuel_per_message: self.session.last_fuel() as f64 / n.max(1) as f64,
            peak_memory: self.session.peak_memory(),
        });
        if self.session.is_poisoned() {
            let plugin = self.session.plugin().clone();
            self.session = Session::with_counters(&plugin, &self.attachment, Arc::default(), true)?;
        }
        out
    }

    /// Routes messages in a topic of `queues` queues.
    ///
    /// # Errors
    /// The plugin trapped or answered badly.
    pub fn route(&mut self, queues: u32, messages: &[MessageBuf]) -> Result<Report<Route>, CallError> {
        let b = self.batch(messages);
        let r = self.session.route(queues, &b);
        self.report(messages.len(), r)
    }

    /// Picks ordering keys.
    ///
    /// # Errors
    /// The plugin trapped or answered badly.
    pub fn ordering_key(&mut self, messages: &[MessageBuf]) -> Result<Report<OrderingKey>, CallError> {
        let b = self.batch(messages);
        let r = self.session.ordering_key(&b);
        self.report(messages.len(), r)
    }

    /// Filters messages.
    ///
    /// # Errors
    /// The plugin trapped or answered badly.
    pub fn filter(&mut self, messages: &[MessageBuf]) -> Result<Report<Delivery>, CallError> {
        let b = self.batch(messages);
        let r = self.session.filter(&b);
        self.report(messages.len(), r)
    }
}
