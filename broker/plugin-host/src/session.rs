//! One live plugin instance (a wasmtime store) and the host functions it may call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::Plugin as PluginWorld;
use crate::bindings::wasmq::plugin::{host, types};
use crate::runtime::{Plugin, ticks};
use crate::{Attachment, Batch, Delivery, Level, Manifest, OrderingKey, Route};

/// Longest log line kept from a plugin; longer ones are cut.
pub const LOG_LINE_BYTES_MAX: usize = 1024;
/// Log lines per second per instance; the rest are counted and dropped.
pub const LOG_LINES_PER_SECOND: u32 = 100;
/// Distinct counter names per attachment.
pub const COUNTERS_MAX: usize = 64;

/// A line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Why a call failed inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// Ran past its deadline (epoch interruption).
    Timeout,
    StackOverflow,
    /// Tried to grow its memory past the cap (then usually aborted).
    MemoryExhausted,
    /// Ran out of fuel (test kit only).
    OutOfFuel,
    /// Any other trap: a panic, `unreachable`, a bad memory access.
    Trap,
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timeout",
            Self::StackOverflow => "stack overflow",
            Self::MemoryExhausted => "memory exhausted",
            Self::OutOfFuel => "out of fuel",
            Self::Trap => "trap",
        })
    }
}

/// A failed plugin call. After any of these but [`CallError::Init`] and
/// [`CallError::BadDecision`] the instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// `init` returned an error: the plugin refuses this attachment.
    #[error("init refused the attachment: {0}")]
    Init(String),
    #[error("{kind}: {message}")]
    Trap { kind: TrapKind, message: String },
    /// No instance could be made (e.g. the instance pool is exhausted).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The plugin answered, but not with one valid decision per message.
    #[error("invalid decisions: {0}")]
    BadDecision(String),
    /// Too many recent failures; calls are refused until the breaker half-opens.
    #[error("circuit breaker open after repeated failures (next try in {0:?})")]
    BreakerOpen(Duration),
}

impl CallError {
    /// A trap of this kind, if it is one.
    #[must_use]
    pub fn trap_kind(&self) -> Option<TrapKind> {
        match self {
            Self::Trap { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Limiter {
    memory_max: usize,
    peak: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Store data: what the host functions see.
pub(crate) struct HostState {
    limiter: Limiter,
    label: Arc<str>,
    capture: Option<Vec<LogLine>>,
    last_panic: Option<String>,
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
    window: (Instant, u32),
    logs_dropped: u64,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState").field("label", &self.label).finish_non_exhaustive()
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > LOG_LINE_BYTES_MAX {
            let mut cut = LOG_LINE_BYTES_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if level == Level::Error && message.starts_with("panic: ") {
            self.last_panic = Some(message.clone());
        }
        if let Some(lines) = &mut self.capture {
            lines.push(LogLine { level, message });
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        if self.window.1 >= LOG_LINES_PER_SECOND {
            self.logs_dropped += 1;
            return;
        }
        self.window.1 += 1;
        let plugin = &*self.label;
        match level {
            Level::Trace => tracing::trace!(target: "wasmq::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "wasmq::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "wasmq::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "wasmq::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "wasmq::plugin", plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        let mut c = self.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = c.get_mut(&name) {
            *v = v.saturating_add(delta);
        } else if c.len() < COUNTERS_MAX && name.len() <= 64 {
            c.insert(name, delta);
        }
    }
}

/// One instance of a plugin, reused across calls. Not thread-safe (a store is used by one
/// thread at a time); [`crate::Attached`] pools them.
pub struct Session {
    store: Store<HostState>,
    world: PluginWorld,
    plugin: Plugin,
    /// The fields this instance's `init` said it reads (within the manifest's needs).
    needs: crate::Fields,
    last_fuel: u64,
    poisoned: bool,
    /// Call deadlines count epoch ticks: they run while an instance exists.
    _ticking: crate::runtime::Ticking,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("plugin", &self.plugin.label()).field("poisoned", &self.poisoned).finish_non_exhaustive()
    }
}

const FUEL_START: u64 = u64::MAX / 4;

impl Session {
    fn instantiate(plugin: &Plugin, counters: Arc<Mutex<BTreeMap<String, u64>>>, capture: bool) -> Result<Self, CallError> {
        let runtime = &plugin.0.runtime;
        // Before anything runs under an epoch deadline.
        let ticking = crate::runtime::Ticking::new(runtime.ticker());
        let state = HostState {
            limiter: Limiter { memory_max: runtime.limits().memory_bytes, ..Limiter::default() },
            label: plugin.label().into(),
            capture: capture.then(Vec::new),
            last_panic: None,
            counters,
            window: (Instant::now(), 0),
            logs_dropped: 0,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(runtime.limits().init_timeout));
        if runtime.limits().fuel {
            store.set_fuel(FUEL_START).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        let world = plugin.0.pre.instantiate(&mut store).map_err(|e| match classify(&e, &store) {
            CallError::Trap { kind: crate::TrapKind::Trap, message } => CallError::Instantiate(message),
            other => other,
        })?;
        let needs = plugin.manifest().needs;
        Ok(Self { store, world, plugin: plugin.clone(), needs, last_fuel: 0, poisoned: false, _ticking: ticking })
    }

    pub(crate) fn describe(plugin: &Plugin) -> Result<Manifest, CallError> {
        let mut s = Self::instantiate(plugin, Arc::default(), false)?;
        let timeout = plugin.0.runtime.limits().init_timeout;
        s.run(timeout, |w, st| w.wasmq_plugin_lifecycle().call_describe(st))
    }

    /// Instantiates `plugin` and runs its `init` for `attachment`.
    ///
    /// # Errors
    /// [`CallError::Init`] when the plugin refuses the attachment; a trap or instantiation
    /// failure otherwise.
    pub fn new(plugin: &Plugin, attachment: &Attachment) -> Result<Self, CallError> {
        Self::with_counters(plugin, attachment, Arc::default(), false)
    }

    /// [`Session::new`] sharing a counter map, optionally capturing logs instead of emitting
    /// them (the test kit).
    ///
    /// # Errors
    /// As [`Session::new`].
    pub fn with_counters(
        plugin: &Plugin,
        attachment: &Attachment,
        counters: Arc<Mutex<BTreeMap<String, u64>>>,
        capture_logs: bool,
    ) -> Result<Self, CallError> {
        let mut s = Self::instantiate(plugin, counters, capture_logs)?;
        let timeout = plugin.0.runtime.limits().init_timeout;
        let needs = s.run(timeout, |w, st| w.wasmq_plugin_lifecycle().call_init(st, attachment))?.map_err(CallError::Init)?;
        // A plugin may narrow what it reads, never widen it past its manifest.
        s.needs = needs & s.plugin.manifest().needs;
        Ok(s)
    }

    fn run<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&PluginWorld, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Instantiate("this instance trapped before; make a new one".into()));
        }
        self.store.set_epoch_deadline(ticks(timeout));
        let fuel = self.plugin.0.runtime.limits().fuel;
        if fuel {
            self.store.set_fuel(FUEL_START).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        let r = f(&self.world, &mut self.store);
        if fuel {
            self.last_fuel = FUEL_START - self.store.get_fuel().unwrap_or(0);
        }
        r.map_err(|e| {
            self.poisoned = true;
            classify(&e, &self.store)
        })
    }

    fn call_timeout(&self) -> Duration {
        self.plugin.0.runtime.limits().call_timeout
    }

    /// Routes a batch in a topic of `queues` queues.
    ///
    /// # Errors
    /// A trap, or not one valid decision per message.
    pub fn route(&mut self, queues: u32, batch: &Batch) -> Result<Vec<Route>, CallError> {
        let d = self.run(self.call_timeout(), |w, st| w.wasmq_plugin_router().call_route_batch(st, queues, batch))?;
        check_len(d.len(), batch)?;
        if let Some(q) = d.iter().find_map(|r| match r {
            Route::Queue(q) if *q >= queues => Some(*q),
            _ => None,
        }) {
            return Err(CallError::BadDecision(format!("queue {q} of a topic with {queues} queues")));
        }
        Ok(d)
    }

    /// Picks ordering keys for a batch.
    ///
    /// # Errors
    /// A trap, or not one decision per message.
    pub fn ordering_key(&mut self, batch: &Batch) -> Result<Vec<OrderingKey>, CallError> {
        let d = self.run(self.call_timeout(), |w, st| w.wasmq_plugin_key_selector().call_key_batch(st, batch))?;
        check_len(d.len(), batch)?;
        Ok(d)
    }

    /// Filters a batch.
    ///
    /// # Errors
    /// A trap, or not one decision per message.
    pub fn filter(&mut self, batch: &Batch) -> Result<Vec<Delivery>, CallError> {
        let d = self.run(self.call_timeout(), |w, st| w.wasmq_plugin_filter().call_filter_batch(st, batch))?;
        check_len(d.len(), batch)?;
        Ok(d)
    }

    /// The fields to fill in this instance's batches: what its `init` asked for.
    #[must_use]
    pub fn needs(&self) -> crate::Fields {
        self.needs
    }

    /// True once a call trapped: the instance must not be used again.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Instructions (fuel) used by the last call; 0 unless the runtime counts fuel.
    #[must_use]
    pub fn last_fuel(&self) -> u64 {
        self.last_fuel
    }

    /// Largest linear memory the instance has had, in bytes.
    #[must_use]
    pub fn peak_memory(&self) -> usize {
        self.store.data().limiter.peak
    }

    /// Captured log lines (when capturing), drained.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().capture.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Log lines dropped by the rate limit.
    #[must_use]
    pub fn logs_dropped(&self) -> u64 {
        self.store.data().logs_dropped
    }

    #[must_use]
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

fn check_len(n: usize, batch: &Batch) -> Result<(), CallError> {
    if n == batch.count as usize { Ok(()) } else { Err(CallError::BadDecision(format!("{n} decisions for {} messages", batch.count))) }
}

fn classify(e: &wasmtime::Error, store: &Store<HostState>) -> CallError {
    let data = store.data();
    let kind = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapKind::Timeout,
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::OutOfFuel) => TrapKind::OutOfFuel,
        _ if data.limiter.hit => TrapKind::MemoryExhausted,
        _ => TrapKind::Trap,
    };
    // One line for the log and the client: the trap (or the plugin's panic message), and the
    // innermost named wasm function, not the whole backtrace.
    let cause = e.root_cause().to_string();
    let message = match (&data.last_panic, e.downcast_ref::<wasmtime::WasmBacktrace>()) {
        (Some(p), _) => format!("{p} ({cause})"),
        (None, Some(bt)) => match bt.frames().iter().find_map(|f| f.func_name()) {
            Some(f) => format!("{cause} in {f}"),
            None => cause,
        },
        (None, None) => cause,
    };
    CallError::Trap { kind, message: message.replace('\n', " ") }
}
