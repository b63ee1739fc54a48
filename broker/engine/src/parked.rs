//! Messages the broker holds back: transactional *half messages* until their producer decides,
//! and *scheduled messages* until they are due.
//!
//! Both live in the CommitLog, in system topics, so a restart or a crash loses neither:
//! - `%HALF%` (one queue): half messages, with their real topic and queue in internal
//!   properties. A decision appends to `%TX_OP%` a record keyed by the half's log offset (commit,
//!   rollback or discard) and, for a commit, a copy on the real topic in the same append.
//! - `%SCHEDULE%` (one queue per delay range, so the slowest do not hold back the watermark of
//!   the fastest): scheduled messages. When due, a copy goes to the real topic.
//!
//! The broker's copy keeps the message's unique id, so whether a half or a scheduled message
//! was already acted on is a lookup in the unique-id index: after a crash between an append and
//! its bookkeeping, recovery neither repeats a commit nor releases a message twice. Per queue, a
//! *watermark* (every message below it is decided or released) is saved with the offsets, so
//! recovery scans only from there.

mod schedule;
mod transactions;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use wasmq_store::{NewMessage, ReadError, StoredMessage, TransactionState};

use crate::engine::{Engine, EngineError, SendError, lock};

/// Half messages of every transactional producer.
pub const HALF_TOPIC: &str = "%HALF%";
/// Transaction decisions, keyed by the half message's log offset.
pub const TX_OP_TOPIC: &str = "%TX_OP%";
/// Scheduled messages until due.
pub const SCHEDULE_TOPIC: &str = "%SCHEDULE%";
/// Scheduled messages recalled before they were due: a record with the message's unique id
/// and delivery time, which recovery looks up as it looks up a released copy.
pub const RECALLED_TOPIC: &str = "%RECALLED%";
/// The broker's internal topics — held messages, and the per-message receive state: not listed
/// to users, never deleted.
pub fn is_internal_topic(name: &str) -> bool {
    [HALF_TOPIC, TX_OP_TOPIC, SCHEDULE_TOPIC, RECALLED_TOPIC, crate::engine::RECEIPTS_TOPIC].contains(&name)
}

/// Internal properties of a held message (removed from the copy consumers get).
const P_TOPIC: &str = "%REAL_TOPIC";
const P_QUEUE: &str = "%REAL_QUEUE";
const P_GROUP: &str = "%PRODUCER_GROUP";
const P_CHECK_AFTER: &str = "%CHECK_AFTER_MS";
/// A half message is first checked this long after it was stored (default), then again at this
/// interval.
pub const TX_CHECK_INTERVAL_MS_DEFAULT: u64 = 30_000;
/// Checks answered "unknown" (or not at all) before a half message is discarded (default).
pub const TX_CHECKS_MAX_DEFAULT: u32 = 15;
/// The longest delay a scheduled message may have (default: 7 days).
pub const DELAY_MAX_MS_DEFAULT: u64 = 7 * 24 * 3_600_000;
/// Most undecided half messages the broker holds; past it, transactional sends are refused.
pub const PENDING_HALVES_MAX: usize = 1_000_000;
/// Most scheduled messages not yet due; past it, scheduled sends are refused.
pub const SCHEDULED_MAX: usize = 4_000_000;
/// Upper bounds of the delay ranges of the schedule queues (the last queue takes the rest).
const SCHEDULE_RANGES_MS: [u64; 6] = [10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000];
pub(crate) const SCHEDULE_QUEUES: u32 = SCHEDULE_RANGES_MS.len() as u32 + 1;
/// Most scheduled messages one release pass moves (the caller loops while more are due).
const RELEASE_BATCH_MAX: usize = 4_096;
/// Most checks handed out per pass.
const CHECKS_PER_PASS_MAX: usize = 10_000;
/// Messages read per step when scanning a queue at start.
const SCAN_STEP: usize = 1_024;

/// A producer's decision on a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Rollback,
    /// Not known yet: the broker asks again later.
    Unknown,
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decided {
    Committed,
    RolledBack,
    /// No decision after the maximum number of checks, or its topic was deleted.
    Discarded,
}

/// What an end-transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The decision was applied: durable once the store has flushed up to `end_offset`.
    Applied { decided: Decided, end_offset: u64 },
    /// An unknown answer: the broker asks again later.
    StillPending,
    /// The transaction had already ended (a late or repeated end): nothing changed.
    AlreadyDecided(Decided),
}

/// A half message due for a check-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckDue {
    pub log_offset: u64,
    pub producer_group: String,
    /// Checks sent before this one.
    pub checks: u32,
}

/// One undecided half message.
#[derive(Debug, Clone)]
struct Half {
    queue_offset: u64,
    topic: String,
    queue_id: u32,
    group: String,
    unique_id: String,
    stored_ms: u64,
    /// The message's own first-check delay, if it set one.
    check_after_ms: Option<u64>,
    checks: u32,
    next_check_ms: u64,
    /// The last check found no producer of the group connected.
    waiting_for_producer: bool,
}

/// Transaction counters since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TxCounters {
    pub committed: u64,
    pub rolled_back: u64,
    pub discarded: u64,
    pub checks_sent: u64,
    pub unknown_answers: u64,
    pub late_ends: u64,
}

#[derive(Debug, Default)]
struct TxState {
    /// By log offset (which is also queue order: `%HALF%` has one queue).
    pending: BTreeMap<u64, Half>,
    /// (next check ms, log offset) of every pending half message: what is due, without
    /// looking at the rest.
    due: BTreeSet<(u64, u64)>,
    counters: TxCounters,
}

impl TxState {
    fn insert(&mut self, log_offset: u64, h: Half) {
        self.due.insert((h.next_check_ms, log_offset));
        if let Some(old) = self.pending.insert(log_offset, h) {
            self.due.remove(&(old.next_check_ms, log_offset));
        }
    }

    fn remove(&mut self, log_offset: u64) -> Option<Half> {
        let h = self.pending.remove(&log_offset)?;
        self.due.remove(&(h.next_check_ms, log_offset));
        Some(h)
    }

    /// Moves a pending half message's next check.
    fn reschedule(&mut self, log_offset: u64, next_check_ms: u64) -> Option<&mut Half> {
        let h = self.pending.get_mut(&log_offset)?;
        self.due.remove(&(h.next_check_ms, log_offset));
        h.next_check_ms = next_check_ms;
        self.due.insert((next_check_ms, log_offset));
        Some(h)
    }
}

/// Where a scheduled message not yet released is stored.
#[derive(Debug, Clone, Copy)]
struct Slot {
    queue_id: u32,
    queue_offset: u64,
    due_ms: u64,
    stored_ms: u64,
}

#[derive(Debug, Default)]
struct ScheduleState {
    /// (due ms, log offset) of every message not yet released (and of rewritten ones' old
    /// places, skipped when popped: a log offset not in `at` is stale).
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    /// Every message not yet released, by log offset (which is also store-time order).
    at: BTreeMap<u64, Slot>,
    /// Queue offsets not yet released, per schedule queue.
    unreleased: Vec<BTreeSet<u64>>,
    released: u64,
    dropped: u64,
    recalled: u64,
}

/// The transaction and scheduling policy.
#[derive(Debug, Clone, Copy)]
pub struct ParkPolicy {
    pub check_interval_ms: u64,
    pub checks_max: u32,
    pub delay_max_ms: u64,
}

impl Default for ParkPolicy {
    fn default() -> Self {
        Self { check_interval_ms: TX_CHECK_INTERVAL_MS_DEFAULT, checks_max: TX_CHECKS_MAX_DEFAULT, delay_max_ms: DELAY_MAX_MS_DEFAULT }
    }
}

/// Where the recovery watermarks are saved, in the engine's configuration directory.
pub const WATERMARKS_FILE: &str = "parked.json";

/// Where the per-message receive state is saved (`engine/receipt_log.rs`), with the
/// `%RECEIPTS%` queue offset its replay starts from.
pub const RECEIVE_STATE_FILE: &str = "receipts.json";

/// Forgets what recovery would start from in `config_dir` — the recovery watermarks and the
/// saved receive state — before the engine opens on a log that was cut (a rejoining broker cut
/// the tail its master never had): what is appended after the cut takes queue offsets these
/// may already have passed, and the saved state may hold the cut records' effects. The next
/// recovery scans and replays from the start instead.
///
/// # Errors
/// A file exists and could not be removed.
pub fn forget_recovery_state(config_dir: &Path) -> std::io::Result<()> {
    for file in [WATERMARKS_FILE, RECEIVE_STATE_FILE] {
        match std::fs::remove_file(config_dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Recovery watermarks, saved with the offsets (a stale file only means a longer scan).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Watermarks {
    half: u64,
    schedule: Vec<u64>,
}

/// The held messages' state inside the engine.
#[derive(Default)]
pub(crate) struct Parked {
    tx: std::sync::Mutex<TxState>,
    schedule: std::sync::Mutex<ScheduleState>,
    policy: std::sync::RwLock<ParkPolicy>,
    ids: std::sync::atomic::AtomicU64,
    /// Called when a scheduled message becomes the earliest due (the I/O shell's timer).
    notify: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").field("policy", &self.policy()).finish_non_exhaustive()
    }
}

/// Pending half messages of one (topic, producer group), for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingTransactions {
    pub topic: String,
    pub producer_group: String,
    pub pending: u64,
    pub oldest_stored_ms: u64,
    /// Checks sent to the group for these messages, in total, and the most for one message.
    pub checks: u64,
    pub most_checks: u32,
}

/// Scheduled messages not yet due, by how far ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleStatus {
    pub pending: u64,
    /// (due within ms from now, count): cumulative buckets up to the maximum delay.
    pub due_within: Vec<(u64, u64)>,
    pub overdue: u64,
    pub next_due_ms: Option<u64>,
    pub released: u64,
    /// Released while their topic no longer existed.
    pub dropped: u64,
    /// Recalled by their producer before they were due.
    pub recalled: u64,
}

/// Why a scheduled message could not be recalled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecallError {
    #[error("{0}")]
    Malformed(String),
    /// Delivered already, recalled already, or not of the topic.
    #[error("{0}")]
    NotWaiting(String),
    /// The broker could not record the recall (a slave, a full disk).
    #[error("{0}")]
    Failed(String),
}

fn internal(p: &[(String, String)], name: &str) -> Option<String> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn schedule_queue(delay_ms: u64) -> u32 {
    SCHEDULE_RANGES_MS.iter().position(|&r| delay_ms < r).unwrap_or(SCHEDULE_RANGES_MS.len()) as u32
}

fn invalid(e: impl std::fmt::Display) -> EngineError {
    EngineError::Invalid(e.to_string())
}

/// The message consumers get: the held message's properties without the internal ones.
fn released_copy(m: &StoredMessage, topic: String, queue_id: u32) -> NewMessage {
    let mut properties = m.properties.clone();
    properties.user.retain(|(k, _)| !k.starts_with('%'));
    NewMessage { topic, queue_id, born_ms: m.born_ms, flags: m.flags, properties, body: m.body.clone() }
}

fn op_record(half_offset: u64, decided: Decided) -> NewMessage {
    let (state, word) = match decided {
        Decided::Committed => (TransactionState::Commit, "commit"),
        Decided::RolledBack => (TransactionState::Rollback, "rollback"),
        Decided::Discarded => (TransactionState::Rollback, "discard"),
    };
    let mut m = NewMessage { topic: TX_OP_TOPIC.to_owned(), body: bytes::Bytes::from_static(word.as_bytes()), ..Default::default() };
    m.properties.keys.push(half_offset.to_string());
    m.properties.transaction = Some(state);
    m
}

fn decided_of(op: &StoredMessage) -> Decided {
    match &op.body[..] {
        b"commit" => Decided::Committed,
        b"rollback" => Decided::RolledBack,
        _ => Decided::Discarded,
    }
}

impl Parked {
    fn policy(&self) -> ParkPolicy {
        *self.policy.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// Sets the check-back interval, the checks before a half message is discarded, and the
    /// longest delay of a scheduled message.
    ///
    /// # Errors
    /// A zero interval or maximum.
    pub fn set_park_policy(&self, policy: ParkPolicy) -> Result<(), EngineError> {
        if policy.check_interval_ms == 0 || policy.checks_max == 0 || policy.delay_max_ms == 0 {
            return Err(EngineError::Invalid("transaction check interval, check maximum and delay maximum must be above 0".into()));
        }
        *self.parked.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        // Recovered halves not yet checked wait the new interval from when they were stored.
        let mut tx = lock(&self.parked.tx);
        let unchecked: Vec<(u64, u64)> = tx
            .pending
            .iter()
            .filter(|(_, h)| h.checks == 0 && h.check_after_ms.is_none())
            .map(|(&o, h)| (o, h.stored_ms + policy.check_interval_ms))
            .collect();
        for (o, next) in unchecked {
            tx.reschedule(o, next);
        }
        Ok(())
    }

    /// Registers the callback that wakes the scheduler when an earlier message is scheduled.
    pub fn on_schedule_change(&self, notify: impl Fn() + Send + Sync + 'static) {
        let _ = self.parked.notify.set(Box::new(notify));
    }

    /// A unique id for a held message that came without one (its copy is found by it).
    fn ensure_unique_id(&self, m: &mut NewMessage) {
        if m.properties.unique_id.as_deref().is_none_or(str::is_empty) {
            let n = self.parked.ids.fetch_add(1, Ordering::Relaxed);
            m.properties.unique_id = Some(format!("{}-{:x}-{n:x}", self.broker_name(), self.clock.now_ms()));
        }
    }

    /// Rebuilds the pending transactions and the schedule from the log, from the saved
    /// watermarks: what has a decision or a released copy is done; the rest is pending.
    pub(crate) fn recover_parked(&self, path: &Path) -> Result<(), EngineError> {
        let marks: Watermarks = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Watermarks::default(),
        };
        let policy = self.parked.policy();
        let mut halves = 0;
        self.scan(HALF_TOPIC, 0, marks.half, |e, m| {
            if e.decision_in_log(&m)?.is_some() {
                return Ok(());
            }
            let user = &m.properties.user;
            let check_after_ms = internal(user, P_CHECK_AFTER).and_then(|v| v.parse().ok());
            lock(&e.parked.tx).insert(
                m.log_offset,
                Half {
                    queue_offset: m.queue_offset,
                    topic: internal(user, P_TOPIC).unwrap_or_default(),
                    queue_id: internal(user, P_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0),
                    group: internal(user, P_GROUP).unwrap_or_default(),
                    unique_id: m.properties.unique_id.clone().unwrap_or_default(),
                    stored_ms: m.store_ms,
                    check_after_ms,
                    checks: 0,
                    next_check_ms: m.store_ms + check_after_ms.unwrap_or(policy.check_interval_ms),
                    waiting_for_producer: false,
                },
            );
            halves += 1;
            Ok(())
        })?;
        // A message rewritten before retention (`rewrite_aging`) is there twice: the newest
        // place counts.
        let mut found: HashMap<(String, u64), (u64, Slot)> = HashMap::new();
        for q in 0..SCHEDULE_QUEUES {
            let from = marks.schedule.get(q as usize).copied().unwrap_or(0);
            self.scan(SCHEDULE_TOPIC, q, from, |e, m| {
                let due = m.properties.delivery_ms.unwrap_or(0);
                let topic = internal(&m.properties.user, P_TOPIC).unwrap_or_default();
                let uid = m.properties.unique_id.clone().unwrap_or_default();
                let copies = e.store.find_by_id_in(&uid, &topic, 16).map_err(invalid)?;
                let recalled = e.store.find_by_id_in(&uid, RECALLED_TOPIC, 16).map_err(invalid)?;
                if copies.iter().chain(&recalled).any(|c| c.properties.delivery_ms == Some(due)) {
                    return Ok(());
                }
                let slot = Slot { queue_id: q, queue_offset: m.queue_offset, due_ms: due, stored_ms: m.store_ms };
                let newest = found.entry((uid, due)).or_insert((m.log_offset, slot));
                if newest.0 < m.log_offset {
                    *newest = (m.log_offset, slot);
                }
                Ok(())
            })?;
        }
        let scheduled = found.len();
        let mut s = lock(&self.parked.schedule);
        for (log_offset, slot) in found.into_values() {
            track(&mut s, log_offset, slot);
        }
        drop(s);
        if halves + scheduled > 0 {
            tracing::info!(halves, scheduled, "undecided transactions and scheduled messages recovered");
        }
        Ok(())
    }

    /// Calls `visit` on each message of a queue from `from` (or the queue's start if retention
    /// removed it) to its end.
    fn scan(
        &self,
        topic: &str,
        queue_id: u32,
        from: u64,
        mut visit: impl FnMut(&Self, StoredMessage) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let (min, max) = self.store.queue_bounds(topic, queue_id);
        let mut at = from.max(min);
        while at < max {
            let read = self.store.read_queue(topic, queue_id, at, SCAN_STEP, 8 << 20).map_err(invalid)?;
            if read.messages.is_empty() {
                break;
            }
            at = read.next_offset;
            for m in read.messages {
                visit(self, m)?;
            }
        }
        Ok(())
    }

    /// Saves the recovery watermarks (called with the offsets).
    pub(crate) fn save_watermarks(&self, path: &Path) -> std::io::Result<()> {
        let half =
            lock(&self.parked.tx).pending.values().next().map_or_else(|| self.store.queue_bounds(HALF_TOPIC, 0).1, |h| h.queue_offset);
        let s = lock(&self.parked.schedule);
        let schedule = (0..SCHEDULE_QUEUES)
            .map(|q| {
                s.unreleased
                    .get(q as usize)
                    .and_then(|u| u.first().copied())
                    .unwrap_or_else(|| self.store.queue_bounds(SCHEDULE_TOPIC, q).1)
            })
            .collect();
        drop(s);
        crate::topics::save_json(path, &Watermarks { half, schedule })
    }
}

fn track(s: &mut ScheduleState, log_offset: u64, slot: Slot) {
    if s.unreleased.len() < SCHEDULE_QUEUES as usize {
        s.unreleased.resize_with(SCHEDULE_QUEUES as usize, BTreeSet::new);
    }
    s.heap.push(Reverse((slot.due_ms, log_offset)));
    s.unreleased[slot.queue_id as usize].insert(slot.queue_offset);
    s.at.insert(log_offset, slot);
}

fn untrack(s: &mut ScheduleState, log_offset: u64) {
    if let Some(slot) = s.at.remove(&log_offset) {
        s.unreleased[slot.queue_id as usize].remove(&slot.queue_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wasmq_store::{ManualClock, StatvfsProbe, Store, StoreConfig};

    fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
        open_cut(dir, clock, None)
    }

    /// [`open`] with the log cut at `cut_log_at` first.
    fn open_cut(dir: &std::path::Path, clock: &Arc<ManualClock>, cut_log_at: Option<u64>) -> Engine {
        let config = StoreConfig { cut_log_at, ..StoreConfig::small_for_tests(dir.join("store")) };
        let (store, _) = Store::open_with(config, clock.clone(), Arc::new(StatvfsProbe)).unwrap();
        Engine::open(Arc::new(store), dir.join("config"), "b0", clock.clone()).unwrap()
    }

    fn msg(body: &str, id: &str) -> NewMessage {
        let mut m = NewMessage { body: bytes::Bytes::copy_from_slice(body.as_bytes()), ..Default::default() };
        m.properties.unique_id = Some(id.to_owned());
        m
    }

    fn bodies(e: &Engine, topic: &str) -> Vec<String> {
        let r = e.pull(topic, 0, 0, 100, 1 << 20).unwrap();
        r.messages.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect()
    }

    #[test]
    fn transactions_commit_once_roll_back_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(dir.path(), &clock);
        e.set_park_policy(ParkPolicy { check_interval_ms: 100, checks_max: 2, delay_max_ms: 10_000 }).unwrap();
        e.create_topic("orders", 1).unwrap();
        let half = |body: &str, id: &str| e.send_half("orders", "pg", None, vec![msg(body, id)]).unwrap().messages[0].log_offset;
        let (a, b, c) = (half("a", "id-a"), half("b", "id-b"), half("c", "id-c"));
        assert!(bodies(&e, "orders").is_empty(), "half messages are invisible");
        assert!(matches!(e.end_transaction(a, "id-a", Decision::Commit).unwrap(), EndOutcome::Applied { decided: Decided::Committed, .. }));
        assert_eq!(e.end_transaction(a, "id-a", Decision::Commit).unwrap(), EndOutcome::AlreadyDecided(Decided::Committed));
        assert_eq!(e.end_transaction(a, "id-a", Decision::Rollback).unwrap(), EndOutcome::AlreadyDecided(Decided::Committed));
        assert!(e.end_transaction(a, "id-x", Decision::Commit).is_err(), "the id must match");
        assert!(matches!(
            e.end_transaction(b, "id-b", Decision::Rollback).unwrap(),
            EndOutcome::Applied { decided: Decided::RolledBack, .. }
        ));
        assert_eq!(e.end_transaction(b, "id-b", Decision::Commit).unwrap(), EndOutcome::AlreadyDecided(Decided::RolledBack));
        assert_eq!(e.end_transaction(c, "id-c", Decision::Unknown).unwrap(), EndOutcome::StillPending);
        assert_eq!(bodies(&e, "orders"), vec!["a"]);
        let pulled = e.pull("orders", 0, 0, 1, 1 << 20).unwrap().messages.remove(0);
        assert!(pulled.properties.user.is_empty(), "internal properties stay inside");

        // Checks: not before the interval; counted; discarded past the maximum.
        assert!(e.transaction_checks_due().is_empty());
        clock.advance_ms(100);
        let due = e.transaction_checks_due();
        assert_eq!(due, vec![CheckDue { log_offset: c, producer_group: "pg".into(), checks: 0 }]);
        assert_eq!(e.half_message(c).unwrap().topic, "orders");
        e.transaction_checked(c, false);
        assert!(e.transaction_checks_due().is_empty());
        e.producer_joined("pg");
        assert_eq!(e.transaction_checks_due()[0].checks, 0, "no producer was connected: not counted; due when one joins");
        e.transaction_checked(c, true);
        drop(e);

        // Reopen: a stays committed once, b rolled back, c pending again.
        let e = open(dir.path(), &clock);
        e.set_park_policy(ParkPolicy { check_interval_ms: 100, checks_max: 2, delay_max_ms: 10_000 }).unwrap();
        assert_eq!(e.transactions().0[0].pending, 1);
        assert_eq!(e.end_transaction(a, "id-a", Decision::Commit).unwrap(), EndOutcome::AlreadyDecided(Decided::Committed));
        for _ in 0..2 {
            clock.advance_ms(100);
            let due = e.transaction_checks_due();
            assert_eq!(due.len(), 1);
            e.transaction_checked(c, true);
        }
        clock.advance_ms(100);
        assert!(e.transaction_checks_due().is_empty(), "past the maximum: discarded");
        assert_eq!(e.end_transaction(c, "id-c", Decision::Commit).unwrap(), EndOutcome::AlreadyDecided(Decided::Discarded));
        assert_eq!(bodies(&e, "orders"), vec!["a"]);
        assert!(matches!(e.send_half("nope", "pg", None, vec![msg("x", "1")]), Err(SendError::UnknownTopic(_))));
    }

    #[test]
    fn a_refused_release_keeps_every_due_message_for_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(10_000));
        let e = open(dir.path(), &clock);
        e.create_topic("t", 1).unwrap();
        let batch = (0..3)
            .map(|i| {
                let mut m = msg("x", &format!("id-{i}"));
                m.properties.delivery_ms = Some(11_000);
                m
            })
            .collect();
        e.send_scheduled("t", batch).unwrap();
        e.store.shutdown().unwrap();
        clock.set_ms(11_000);
        assert_eq!(e.release_due(), (0, Some(12_000)), "appends refused: tried again in a second");
        assert_eq!(e.schedule_status().pending, 3);
        assert_eq!(lock(&e.parked.schedule).heap.len(), 3, "all three are due again, not only the first");
    }

    #[test]
    fn a_slave_elected_master_finds_the_halves_and_schedule_it_replicated() {
        let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let clock = Arc::new(ManualClock::new(1_000));
        let master = open(m.path(), &clock);
        let slave = open(s.path(), &clock);
        slave.set_follower();
        slave.set_read_only("a slave of b0");
        master.create_topic("t", 1).unwrap();
        master.send_half("t", "pg", None, vec![msg("undecided", "id-1")]).unwrap();
        let mut later = msg("later", "id-2");
        later.properties.delivery_ms = Some(5_000);
        master.send_scheduled("t", vec![later]).unwrap();
        // The slave's log: the master's bytes, as replication appends them.
        let raw = master.store.read_raw(0, 1 << 20).unwrap();
        slave.store.append_raw(raw.start_offset, &raw.bytes).unwrap();
        slave.adopt_topics(&master.topics_json()).unwrap();
        // Its periodic save must not pass what it never tracked.
        slave.persist_offsets().unwrap();
        drop(slave);
        // Elected: opened again as master.
        let elected = open(s.path(), &clock);
        assert_eq!(elected.transactions().0.iter().map(|p| p.pending).sum::<u64>(), 1, "the undecided half is pending");
        assert_eq!(elected.schedule_status().pending, 1, "the scheduled message waits");
        clock.set_ms(5_000);
        assert_eq!(elected.release_due().0, 1);
        assert_eq!(bodies(&elected, "t"), vec!["later"]);
    }

    #[test]
    fn after_a_cut_the_watermarks_are_forgotten_and_later_halves_found() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(dir.path(), &clock);
        e.create_topic("t", 1).unwrap();
        // Two transactions decided: the watermark passes both (half queue offset 2).
        let first = e.send_half("t", "pg", None, vec![msg("a", "id-a"), msg("b", "id-b")]).unwrap();
        let cut = first.messages[0].log_offset;
        for (m, id) in first.messages.iter().zip(["id-a", "id-b"]) {
            e.end_transaction(m.log_offset, id, Decision::Rollback).unwrap();
        }
        e.persist_offsets().unwrap();
        drop(e);
        // The tail is cut (this broker's master never had it), as a rejoining broker does.
        forget_recovery_state(&dir.path().join("config")).unwrap();
        let e = open_cut(dir.path(), &clock, Some(cut));
        // A half arriving after the cut takes half queue offset 0, below the old watermark.
        e.send_half("t", "pg", None, vec![msg("c", "id-c")]).unwrap();
        drop(e);
        let e = open(dir.path(), &clock);
        assert_eq!(e.transactions().0.iter().map(|p| p.pending).sum::<u64>(), 1, "the half after the cut is pending");
        forget_recovery_state(&dir.path().join("config")).expect("no file is no error");
    }

    #[test]
    fn a_commit_whose_op_record_was_lost_is_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = open(dir.path(), &clock);
        e.create_topic("t", 1).unwrap();
        let h = e.send_half("t", "pg", None, vec![msg("x", "id-1")]).unwrap().messages[0].log_offset;
        // As a crash after the copy and before the op record would leave it.
        let m = e.store.read(h).unwrap();
        let mut copy = released_copy(&m, "t".into(), 0);
        copy.properties.transaction = Some(TransactionState::Commit);
        e.store.append(&[copy]).unwrap();
        drop(e);
        let e = open(dir.path(), &clock);
        assert!(e.transactions().0.is_empty(), "the copy counts as the decision");
        assert_eq!(e.end_transaction(h, "id-1", Decision::Commit).unwrap(), EndOutcome::AlreadyDecided(Decided::Committed));
        assert_eq!(bodies(&e, "t"), vec!["x"]);
    }

    #[test]
    fn a_recalled_scheduled_message_is_never_delivered_also_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(10_000));
        let e = open(dir.path(), &clock);
        e.create_topic("t", 1).unwrap();
        e.create_topic("other", 1).unwrap();
        let mut keep = msg("keep", "id-keep");
        keep.properties.delivery_ms = Some(12_000);
        let mut drop_me = msg("recall", "id-recall");
        drop_me.properties.delivery_ms = Some(12_000);
        let handle = Engine::recall_handle(&drop_me).unwrap();
        e.send_scheduled("t", vec![keep, drop_me]).unwrap();
        assert!(matches!(e.recall_scheduled("other", &handle), Err(RecallError::NotWaiting(_))), "another topic's");
        assert!(matches!(e.recall_scheduled("t", "garbage"), Err(RecallError::Malformed(_))));
        assert!(matches!(e.recall_scheduled("t", "11000:id-recall"), Err(RecallError::NotWaiting(_))), "another time");
        assert_eq!(e.recall_scheduled("t", &handle).unwrap(), "id-recall");
        assert!(matches!(e.recall_scheduled("t", &handle), Err(RecallError::NotWaiting(_))), "recalled already");
        assert_eq!((e.schedule_status().pending, e.schedule_status().recalled), (1, 1));
        drop(e);
        // Reopened from the start of the schedule topic (no saved watermarks): still recalled.
        let e = open(dir.path(), &clock);
        assert_eq!(e.schedule_status().pending, 1);
        clock.set_ms(12_000);
        assert_eq!(e.release_due().0, 1);
        assert_eq!(bodies(&e, "t"), vec!["keep"]);
        let err = e.recall_scheduled(
            "t",
            &Engine::recall_handle(&{
                let mut k = msg("keep", "id-keep");
                k.properties.delivery_ms = Some(12_000);
                k
            })
            .unwrap(),
        );
        assert!(err.unwrap_err().to_string().contains("delivered already"), "too late once delivered");
    }

    #[test]
    fn scheduled_messages_wait_until_due_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(10_000));
        let e = open(dir.path(), &clock);
        e.set_park_policy(ParkPolicy { delay_max_ms: 60_000, ..ParkPolicy::default() }).unwrap();
        e.create_topic("t", 1).unwrap();
        let at = |body: &str, due: u64| {
            let mut m = msg(body, &format!("id-{body}"));
            m.properties.delivery_ms = Some(due);
            m
        };
        e.send_scheduled("t", vec![at("late", 15_000), at("soon", 11_000)]).unwrap();
        e.send_scheduled("t", vec![at("mid", 12_000)]).unwrap();
        assert!(matches!(e.send_scheduled("t", vec![at("far", 80_001)]), Err(SendError::Invalid(_))), "past the maximum delay");
        assert_eq!(e.release_due(), (0, Some(11_000)));
        clock.set_ms(10_999);
        assert_eq!(e.release_due().0, 0, "never early");
        clock.set_ms(11_000);
        assert_eq!(e.release_due(), (1, Some(12_000)));
        assert_eq!(bodies(&e, "t"), vec!["soon"]);
        assert_eq!(e.schedule_status().pending, 2);
        e.persist_offsets().unwrap();
        drop(e);

        let e = open(dir.path(), &clock);
        assert_eq!(e.schedule_status().pending, 2, "released ones stay released; the rest are back");
        clock.set_ms(20_000);
        assert_eq!(e.release_due(), (2, None));
        assert_eq!(bodies(&e, "t"), vec!["soon", "mid", "late"]);
        let m = e.pull("t", 0, 0, 1, 1 << 20).unwrap().messages.remove(0);
        assert_eq!((m.properties.delivery_ms, m.properties.unique_id.as_deref()), (Some(11_000), Some("id-soon")));
        drop(e);
        let e = open(dir.path(), &clock);
        assert_eq!(e.release_due(), (0, None), "nothing released twice");

        // A delay longer than the retention: rewritten while it waits, released once.
        e.send_scheduled("t", vec![at("patient", 70_000)]).unwrap();
        assert_eq!(e.rewrite_aging(5_000).unwrap(), 0, "not old yet");
        clock.set_ms(30_000);
        assert_eq!(e.rewrite_aging(5_000).unwrap(), 1);
        assert_eq!(e.schedule_status().pending, 1);
        drop(e);
        let e = open(dir.path(), &clock);
        assert_eq!(e.schedule_status().pending, 1, "both places are in the log; one message");
        clock.set_ms(70_000);
        assert_eq!(e.release_due(), (1, None));
        assert_eq!(bodies(&e, "t"), vec!["soon", "mid", "late", "patient"]);
    }
}
