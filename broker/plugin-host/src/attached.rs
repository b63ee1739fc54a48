//! A plugin bound to a topic or group: pooled instances, stats, circuit breaker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::runtime::Plugin;
use crate::session::{CallError, Session, TrapKind};
use crate::{Attachment, Batch, Delivery, Fields, OrderingKey, Route, role_name};

pub use wasmq_engine::FailurePolicy;

/// Failures within [`BREAKER_WINDOW`] that open the breaker.
pub const BREAKER_FAILURES: usize = 5;
pub const BREAKER_WINDOW: Duration = Duration::from_secs(60);
/// First open period; it doubles after each failed half-open try, up to [`BREAKER_BACKOFF_MAX`].
pub const BREAKER_BACKOFF: Duration = Duration::from_secs(1);
pub const BREAKER_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Idle instances kept per attachment.
const IDLE_MAX: usize = 4;

/// A circuit breaker: after [`BREAKER_FAILURES`] failures in [`BREAKER_WINDOW`], calls are
/// refused for a backoff; then one call is let through (half open): success closes the
/// breaker, failure reopens it for twice as long.
#[derive(Debug)]
pub struct Breaker {
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
    backoff: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { failures: VecDeque::new(), open_until: None, backoff: BREAKER_BACKOFF }
    }
}

impl Breaker {
    /// `Err(wait)` while open.
    ///
    /// # Errors
    /// The time left before the next try.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            Some(u) if now < u => Err(u - now),
            _ => Ok(()),
        }
    }

    pub fn success(&mut self) {
        if self.open_until.take().is_some() {
            self.backoff = BREAKER_BACKOFF;
            self.failures.clear();
        }
    }

    /// Records a failure; true if the breaker (re)opened.
    pub fn failure(&mut self, now: Instant) -> bool {
        if self.open_until.is_some() {
            self.backoff = (self.backoff * 2).min(BREAKER_BACKOFF_MAX);
            self.open_until = Some(now + self.backoff);
            return true;
        }
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|t| now.duration_since(*t) > BREAKER_WINDOW) {
            self.failures.pop_front();
        }
        if self.failures.len() >= BREAKER_FAILURES {
            self.open_until = Some(now + self.backoff);
            return true;
        }
        false
    }

    #[must_use]
    pub fn is_open(&self, now: Instant) -> bool {
        self.check(now).is_err()
    }
}

/// Counters of one attachment.
#[derive(Debug, Default)]
pub struct Stats {
    calls: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    memory_exhausted: AtomicU64,
    stack_overflows: AtomicU64,
    breaker_trips: AtomicU64,
    instances: AtomicU64,
    nanos: AtomicU64,
    memory_peak_bytes: AtomicU64,
    timeout_call_max_ns: AtomicU64,
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub messages: u64,
    /// Failed calls of any kind (traps, bad decisions, refused by the breaker, ...).
    pub errors: u64,
    /// Calls that trapped (timeouts, stack overflows and memory exhaustion included).
    pub traps: u64,
    pub timeouts: u64,
    pub memory_exhausted: u64,
    pub stack_overflows: u64,
    pub breaker_trips: u64,
    pub breaker_open: bool,
    /// Instances made (the first, and one after each trap).
    pub instances: u64,
    /// Time in calls, host side included.
    pub nanos: u64,
    /// Largest linear memory any instance was granted, in bytes.
    pub memory_peak_bytes: u64,
    /// Longest call stopped at its deadline, host side included, in nanoseconds.
    pub timeout_call_max_ns: u64,
    /// The plugin's own counters (`counter-add`).
    pub counters: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Mean time per message in nanoseconds (0 before the first message).
    #[must_use]
    pub fn ns_per_message(&self) -> f64 {
        if self.messages == 0 { 0.0 } else { self.nanos as f64 / self.messages as f64 }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A plugin version attached to a topic (router, ordering key) or a group's subscription
/// (filter) with its configuration and failure policy. Thread-safe: each call borrows a pooled
/// instance.
pub struct Attached {
    plugin: Plugin,
    attachment: Attachment,
    /// What this attachment's `init` said it reads: the columns to fill.
    needs: Fields,
    policy: FailurePolicy,
    idle: Mutex<Vec<Session>>,
    stats: Stats,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("plugin", &self.plugin.label())
            .field("role", &role_name(self.attachment.role))
            .field("topic", &self.attachment.topic)
            .field("group", &self.attachment.group)
            .finish_non_exhaustive()
    }
}

impl Attached {
    /// Attaches `plugin`: checks it has the role and runs `init` once with the real
    /// configuration (the instance is kept for the first batch).
    ///
    /// # Errors
    /// The plugin lacks the role ([`CallError::Init`]), refuses the configuration, or traps.
    pub fn new(plugin: Plugin, attachment: Attachment, policy: FailurePolicy) -> Result<Self, CallError> {
        if !plugin.has_role(attachment.role) {
            return Err(CallError::Init(format!("{} is not a {} plugin", plugin.label(), role_name(attachment.role))));
        }
        let stats = Stats::default();
        let first = Session::with_counters(&plugin, &attachment, stats.counters.clone(), false)?;
        stats.instances.store(1, Ordering::Relaxed);
        let needs = first.needs();
        Ok(Self { plugin, attachment, needs, policy, idle: Mutex::new(vec![first]), stats, breaker: Mutex::new(Breaker::default()) })
    }

    #[must_use]
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The message fields to pass in batches (the attachment's `init` may read less than the
    /// manifest's needs).
    #[must_use]
    pub fn needs(&self) -> Fields {
        self.needs
    }

    #[must_use]
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    #[must_use]
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// See [`Session::route`].
    ///
    /// # Errors
    /// [`CallError`]; the caller applies [`Attached::policy`].
    pub fn route(&self, queues: u32, batch: &Batch) -> Result<Vec<Route>, CallError> {
        self.call(batch, |s| s.route(queues, batch))
    }

    /// See [`Session::ordering_key`].
    ///
    /// # Errors
    /// [`CallError`]; the caller applies [`Attached::policy`].
    pub fn ordering_key(&self, batch: &Batch) -> Result<Vec<OrderingKey>, CallError> {
        self.call(batch, |s| s.ordering_key(batch))
    }

    /// See [`Session::filter`].
    ///
    /// # Errors
    /// [`CallError`]; the caller applies [`Attached::policy`].
    pub fn filter(&self, batch: &Batch) -> Result<Vec<Delivery>, CallError> {
        self.call(batch, |s| s.filter(batch))
    }

    fn call<R>(&self, batch: &Batch, f: impl FnOnce(&mut Session) -> Result<R, CallError>) -> Result<R, CallError> {
        let now = Instant::now();
        if let Err(wait) = lock(&self.breaker).check(now) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::BreakerOpen(wait));
        }
        let session = lock(&self.idle).pop();
        let mut session = match session {
            Some(s) => s,
            None => {
                self.stats.instances.fetch_add(1, Ordering::Relaxed);
                match Session::with_counters(&self.plugin, &self.attachment, self.stats.counters.clone(), false) {
                    Ok(s) => s,
                    Err(e) => return Err(self.failed(now, e, 1)),
                }
            }
        };
        let r = f(&mut session);
        let took = now.elapsed().as_nanos() as u64;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats.messages.fetch_add(u64::from(batch.count), Ordering::Relaxed);
        self.stats.nanos.fetch_add(took, Ordering::Relaxed);
        self.stats.memory_peak_bytes.fetch_max(session.peak_memory() as u64, Ordering::Relaxed);
        if matches!(&r, Err(e) if e.trap_kind() == Some(TrapKind::Timeout)) {
            self.stats.timeout_call_max_ns.fetch_max(took, Ordering::Relaxed);
        }
        if !session.is_poisoned() {
            let mut idle = lock(&self.idle);
            if idle.len() < IDLE_MAX {
                idle.push(session);
            }
        }
        match r {
            Ok(v) => {
                lock(&self.breaker).success();
                Ok(v)
            }
            Err(e) => Err(self.failed(now, e, batch.count)),
        }
    }

    /// Counts and logs a failed call. A failure of a batch of several messages that is not a
    /// timeout is not held against the plugin by the breaker: the broker then tries those
    /// messages one by one (so one poison message does not condemn a batch), and those calls
    /// count. A timeout always counts (its messages are not all tried again).
    fn failed(&self, now: Instant, e: CallError, messages: u32) -> CallError {
        let s = &self.stats;
        s.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = e.trap_kind() {
            s.traps.fetch_add(1, Ordering::Relaxed);
            match kind {
                TrapKind::Timeout => s.timeouts.fetch_add(1, Ordering::Relaxed),
                TrapKind::MemoryExhausted => s.memory_exhausted.fetch_add(1, Ordering::Relaxed),
                TrapKind::StackOverflow => s.stack_overflows.fetch_add(1, Ordering::Relaxed),
                TrapKind::OutOfFuel | TrapKind::Trap => 0,
            };
        }
        let counts = messages <= 1 || e.trap_kind() == Some(TrapKind::Timeout);
        let tripped = counts && lock(&self.breaker).failure(now);
        if tripped {
            s.breaker_trips.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            plugin = %self.plugin.label(),
            sha256 = %&self.plugin.sha256()[..12],
            role = role_name(self.attachment.role),
            topic = %self.attachment.topic,
            group = ?self.attachment.group,
            policy = self.policy.as_str(),
            breaker_opened = tripped,
            "plugin call failed: {e}"
        );
        e
    }

    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            calls: g(&s.calls),
            messages: g(&s.messages),
            errors: g(&s.errors),
            traps: g(&s.traps),
            timeouts: g(&s.timeouts),
            memory_exhausted: g(&s.memory_exhausted),
            stack_overflows: g(&s.stack_overflows),
            breaker_trips: g(&s.breaker_trips),
            breaker_open: lock(&self.breaker).is_open(Instant::now()),
            instances: g(&s.instances),
            nanos: g(&s.nanos),
            memory_peak_bytes: g(&s.memory_peak_bytes),
            timeout_call_max_ns: g(&s.timeout_call_max_ns),
            counters: lock(&s.counters).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_repeated_failures_half_opens_and_backs_off() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 0..BREAKER_FAILURES - 1 {
            assert!(!b.failure(t0 + Duration::from_millis(i as u64)), "failure {i} does not open it yet");
            assert!(b.check(t0).is_ok());
        }
        assert!(b.failure(t0), "the fifth failure in the window opens it");
        assert_eq!(b.check(t0), Err(BREAKER_BACKOFF));
        // Half open after the backoff: a failure reopens it for twice as long.
        let t1 = t0 + BREAKER_BACKOFF;
        assert!(b.check(t1).is_ok());
        assert!(b.failure(t1));
        assert_eq!(b.check(t1), Err(BREAKER_BACKOFF * 2));
        // A success closes it and forgets the past.
        b.success();
        assert!(b.check(t1).is_ok());
        assert!(!b.failure(t1));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 0..BREAKER_FAILURES - 1 {
            b.failure(t0 + Duration::from_millis(i as u64));
        }
        assert!(!b.failure(t0 + BREAKER_WINDOW + Duration::from_secs(1)), "the old failures fell out of the window");
        assert!(!b.is_open(t0 + BREAKER_WINDOW + Duration::from_secs(1)));
    }

    #[test]
    fn the_backoff_stops_growing_at_its_maximum() {
        let mut t = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..BREAKER_FAILURES {
            b.failure(t);
        }
        for _ in 0..20 {
            t += BREAKER_BACKOFF_MAX;
            b.failure(t);
        }
        assert_eq!(b.check(t), Err(BREAKER_BACKOFF_MAX));
    }
}
