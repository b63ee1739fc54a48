//! The wasmtime engine, plugin loading (validation, componentizing, compiling, caching).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{Plugin as PluginWorld, PluginPre};
use crate::session::{HostState, Session};
use crate::{Attachment, Manifest, PLUGIN_BYTES_MAX, Role};

/// The sandbox's limits, the same for every plugin of a runtime.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per instance (the pool's slot size). Default 16 MiB.
    pub memory_bytes: usize,
    /// WebAssembly stack per call. Default 512 KiB.
    pub stack_bytes: usize,
    /// Deadline of one batch call. Default 10 ms.
    pub call_timeout: Duration,
    /// Deadline of `init` (and of `describe`). Default 1 s.
    pub init_timeout: Duration,
    /// Live instances in the pool (all plugins of the runtime). Default 128.
    pub instances_max: u32,
    /// Count instructions (fuel) per call: for the test kit, not for production.
    pub fuel: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            stack_bytes: 512 << 10,
            call_timeout: Duration::from_millis(10),
            init_timeout: Duration::from_secs(1),
            instances_max: 128,
            fuel: false,
        }
    }
}

/// The epoch tick: deadlines are whole ticks (plus one, so a deadline never fires at once).
pub(crate) const TICK: Duration = Duration::from_millis(1);

pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_micros() / TICK.as_micros()).max(1) as u64 + 1
}

/// Why a plugin binary was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin is {size} bytes; the limit is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("not a WebAssembly module or component (bad magic number)")]
    NotWasm,
    #[error("cannot make a component of this module: {0} (build it with the wasmq plugin SDK, which embeds the wasmq:plugin world)")]
    Componentize(String),
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("imports `{0}`, but a plugin may import only wasmq:plugin/host (no WASI, no other host functions)")]
    Import(String),
    #[error("does not implement the wasmq:plugin/plugin world: {0}")]
    World(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("bad manifest: {0}")]
    Manifest(String),
    #[error("init dry run failed: {0}")]
    Init(String),
    #[error("plugin cache: {0}")]
    Cache(#[from] std::io::Error),
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    compat: String,
    ticker: Arc<Ticker>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.ticker.state).stopped = true;
        self.ticker.wake.notify_all();
    }
}

/// The epoch ticker's state: it advances the engine's epoch every [`TICK`] while any plugin
/// instance exists (calls' deadlines count ticks) and sleeps otherwise, so a broker without
/// plugins does not wake a thread a thousand times a second.
#[derive(Default)]
pub(crate) struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Default)]
struct TickerState {
    instances: usize,
    stopped: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ticker {
    /// Ticks by the clock, not by sleeps: a sleep that overran (a busy machine wakes the thread
    /// late) is made up with the ticks it missed, so a deadline of N ticks ends within a tick of
    /// N ticks of wall time instead of stretching with every late wake-up.
    fn run(&self, engine: &Engine) {
        let mut next: Option<std::time::Instant> = None;
        loop {
            {
                let mut st = lock(&self.state);
                if st.instances == 0 {
                    next = None;
                }
                while st.instances == 0 && !st.stopped {
                    st = self.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if st.stopped {
                    return;
                }
            }
            let due = *next.get_or_insert_with(|| std::time::Instant::now() + TICK);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            let now = std::time::Instant::now();
            let mut at = due;
            while at <= now {
                engine.increment_epoch();
                at += TICK;
            }
            next = Some(at);
        }
    }
}

/// Keeps the epoch ticking while it lives (one per plugin instance).
pub(crate) struct Ticking(Arc<Ticker>);

impl Ticking {
    pub(crate) fn new(ticker: &Arc<Ticker>) -> Self {
        lock(&ticker.state).instances += 1;
        ticker.wake.notify_all();
        Self(Arc::clone(ticker))
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        lock(&self.0.state).instances -= 1;
    }
}

/// One wasmtime engine and everything shared by the plugins that run in it. Cheap to clone.
#[derive(Clone)]
pub struct Runtime(Arc<Inner>);

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.0.limits).field("cache_dir", &self.0.cache_dir).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker. Compiled plugins are cached in
    /// `cache_dir` when given.
    ///
    /// # Errors
    /// The engine configuration is refused (e.g. the pool cannot reserve its memory).
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let mut pool = PoolingAllocationConfig::default();
        let n = limits.instances_max.max(1);
        // A componentized SDK plugin is one main module plus small shim modules.
        pool.total_component_instances(n)
            .total_core_instances(n * 4)
            .max_core_instances_per_component(8)
            .total_memories(n)
            .max_memories_per_component(1)
            .total_tables(n * 4)
            .max_tables_per_component(4)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(limits.fuel)
            .max_wasm_stack(limits.stack_bytes)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError::Compile(format!("engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        PluginWorld::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Compile(format!("linker: {e:#}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = format!("{:016x}", h.finish());
        if let Some(d) = &cache_dir {
            std::fs::create_dir_all(d)?;
        }
        let ticker = Arc::new(Ticker::default());
        let (e, t) = (engine.clone(), Arc::clone(&ticker));
        std::thread::Builder::new().name("wasmq-plugin-epoch".into()).spawn(move || t.run(&e))?;
        Ok(Self(Arc::new(Inner { engine, linker, limits, cache_dir, compat, ticker })))
    }

    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub(crate) fn ticker(&self) -> &Arc<Ticker> {
        &self.0.ticker
    }

    /// Validates and compiles a plugin binary (a component, or a core module built with the
    /// SDK, which is componentized first), then instantiates it once to read its manifest and
    /// dry-runs `init` in each of its roles with an empty configuration (a returned error is
    /// fine there, as the plugin may need configuration; a trap or timeout is not).
    ///
    /// # Errors
    /// [`LoadError`], naming what is wrong.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        if bytes.len() > PLUGIN_BYTES_MAX {
            return Err(LoadError::TooLarge { size: bytes.len(), max: PLUGIN_BYTES_MAX });
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let component = self.compile(bytes, &sha256)?;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.0.engine) {
            if !name.starts_with("wasmq:plugin/") {
                return Err(LoadError::Import(name.to_owned()));
            }
        }
        let pre = self.0.linker.instantiate_pre(&component).map_err(|e| LoadError::World(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
        let mut plugin = Plugin(Arc::new(PluginInner {
            runtime: self.clone(),
            sha256,
            size: bytes.len(),
            pre,
            manifest: Manifest { name: String::new(), version: String::new(), roles: Vec::new(), needs: crate::Fields::empty() },
        }));
        let manifest = Session::describe(&plugin).map_err(|e| LoadError::Describe(e.to_string()))?;
        validate_manifest(&manifest)?;
        Arc::get_mut(&mut plugin.0).expect("not shared yet").manifest = manifest;
        for &role in &plugin.0.manifest.roles {
            let attachment = Attachment {
                role,
                topic: "wasmq-dry-run".into(),
                group: (role == Role::Filter).then(|| "wasmq-dry-run".into()),
                config: Vec::new(),
            };
            match Session::new(&plugin, &attachment) {
                Ok(_) | Err(crate::CallError::Init(_)) => {}
                Err(e) => return Err(LoadError::Init(e.to_string())),
            }
        }
        Ok(plugin)
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let cached = self.0.cache_dir.as_ref().map(|d| d.join(format!("{sha256}-{}.cwasm", self.0.compat)));
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file is one this runtime wrote (`serialize` below) into the broker's
            // own data directory, named by the source's SHA-256 and the engine's compatibility
            // hash; wasmtime also checks its header for a matching engine configuration.
            match unsafe { Component::deserialize_file(&self.0.engine, path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(path = %path.display(), "plugin cache entry unusable ({e:#}); recompiling"),
            }
        }
        let component_bytes = match kind(bytes) {
            Some(Kind::Component) => std::borrow::Cow::Borrowed(bytes),
            Some(Kind::Module) => std::borrow::Cow::Owned(componentize(bytes)?),
            None => return Err(LoadError::NotWasm),
        };
        let component = Component::new(&self.0.engine, &*component_bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Some(path) = cached {
            let artifact = component.serialize().map_err(|e| LoadError::Compile(format!("serialize: {e:#}")))?;
            write_atomically(&path, &artifact)?;
        }
        Ok(component)
    }
}

enum Kind {
    Module,
    Component,
}

fn kind(bytes: &[u8]) -> Option<Kind> {
    match bytes.get(0..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(Kind::Module),
        [0, b'a', b's', b'm', _, 0, 1, 0] => Some(Kind::Component),
        _ => None,
    }
}

fn componentize(module: &[u8]) -> Result<Vec<u8>, LoadError> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|mut e| e.encode())
        .map_err(|e| LoadError::Componentize(format!("{e:#}")))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn validate_manifest(m: &Manifest) -> Result<(), LoadError> {
    if m.name.is_empty()
        || m.name.len() > 64
        || !m.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(LoadError::Manifest(format!("name {:?} must be 1-64 bytes of [a-z0-9_-]", m.name)));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        return Err(LoadError::Manifest(format!("version {:?} must be 1-64 bytes", m.version)));
    }
    if m.roles.is_empty() {
        return Err(LoadError::Manifest("declares no role (router, ordering-key or filter)".into()));
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) struct PluginInner {
    pub(crate) runtime: Runtime,
    pub(crate) sha256: String,
    pub(crate) size: usize,
    pub(crate) pre: PluginPre<HostState>,
    pub(crate) manifest: Manifest,
}

/// A loaded plugin version: compiled, validated, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Plugin(pub(crate) Arc<PluginInner>);

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.0.manifest.name).field("sha256", &self.0.sha256).finish_non_exhaustive()
    }
}

impl Plugin {
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.0.manifest
    }

    /// SHA-256 of the uploaded bytes (hex): the version's content address.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.0.sha256
    }

    /// Size of the uploaded bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.0.size
    }

    /// `name@version` for logs.
    #[must_use]
    pub fn label(&self) -> String {
        format!("{}@{}", self.0.manifest.name, self.0.manifest.version)
    }

    #[must_use]
    pub fn has_role(&self, role: Role) -> bool {
        self.0.manifest.roles.contains(&role)
    }
}
