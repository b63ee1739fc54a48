//! The engine: one per broker, shared by every connection.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use wasmq_store::{AppendError, Appended, Clock, NewMessage, QueueRead, ReadError, Store};

use crate::groups::{Assignment, Coordinator, FenceError, GroupMode, GroupView, TagFilter};
use crate::offsets::OffsetTable;
use crate::parked::{HALF_TOPIC, Parked, SCHEDULE_QUEUES, SCHEDULE_TOPIC, TX_OP_TOPIC};
use crate::topics::{self, QUEUES_PER_TOPIC_MAX, QueueStatus, TOPICS_MAX, TopicConfig, TopicError, TopicStatus};

/// Most long-poll waiters parked on one queue; past it, a pull answers empty at once.
const WAITERS_PER_QUEUE_MAX: usize = 10_000;
/// Most clients remembered by heartbeat.
const CLIENTS_MAX: usize = 100_000;
/// Most consume-queue entries one filtered pull examines (a bound on the work a sparse filter
/// can cause); the pull returns what it found and where to continue.
const FILTER_SCAN_MAX: usize = 16_384;
/// A group member silent this long loses its queues (default; see `Engine::set_session_timeout`).
pub const GROUP_SESSION_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Redelivery delays by reconsume count, as RocketMQ's levels 3.. (1s 5s 10s 30s 1m … 2h).
pub const RETRY_DELAYS_MS_DEFAULT: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000, 480_000, 540_000, 600_000, 1_200_000,
    1_800_000, 3_600_000, 7_200_000,
];
/// Sends back after which a message goes to the dead-letter topic.
pub const MAX_RECONSUME_TIMES_DEFAULT: u32 = 16;
/// How long an orderly consumer's queue lock lasts unless renewed (default).
pub const ORDER_LOCK_TTL_MS_DEFAULT: u64 = 30_000;
/// Most queue locks the broker holds.
const ORDER_LOCKS_MAX: usize = 1 << 20;
/// The user property naming the topic a retried message first came from.
pub const ORIGIN_TOPIC_PROPERTY: &str = "ORIGIN_TOPIC";

/// The retry topic of a group: one queue per delay, so each queue is in due-time order.
pub fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

/// The dead-letter topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// A plain send for [`Engine::send_many`]: a batch for one topic, to one queue (`None`: round
/// robin) or, when `routed`, each message to the queue it names.
#[derive(Debug, Clone)]
pub struct PlainSend {
    pub topic: String,
    pub queue: Option<u32>,
    pub routed: bool,
    pub messages: Vec<NewMessage>,
}

/// Where a sent-back message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendBackOutcome {
    /// Redelivered through the retry topic no earlier than `due_ms`.
    Retry { reconsume_times: u32, due_ms: u64 },
    /// Past the maximum: stored in the dead-letter topic.
    DeadLetter { reconsume_times: u32 },
}

/// A parked long poll: woken when its queue may have new messages.
pub trait Wake: Send {
    fn wake(self: Box<Self>);
    /// The poller gave up (deadline or disconnect); the waiter can be dropped.
    fn is_cancelled(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub last_seen_ms: u64,
    pub producer_groups: Vec<String>,
    pub consumer_groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("queue {queue_id} does not exist: topic {topic} has {queues} queues")]
    InvalidQueue { topic: String, queue_id: u32, queues: u32 },
    #[error("{0}")]
    Invalid(String),
    /// This broker is a slave.
    #[error("{0}")]
    ReadOnly(String),
    #[error(transparent)]
    Append(#[from] AppendError),
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("queue {queue_id} does not exist: topic {topic} has {queues} queues")]
    InvalidQueue { topic: String, queue_id: u32, queues: u32 },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("invalid filter: {0}")]
    Filter(String),
}

#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError {
    #[error(transparent)]
    Fenced(FenceError),
    #[error(transparent)]
    Engine(EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("loading {path}: {source}")]
    Load { path: PathBuf, source: std::io::Error },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("saving {path}: {source}")]
    Save { path: PathBuf, source: std::io::Error },
    /// This broker is a slave.
    #[error("{0}")]
    ReadOnly(String),
    /// The store refused an append the broker made for the request (full disk, stopped store).
    #[error(transparent)]
    Append(#[from] AppendError),
}

type QueueKey = (Arc<str>, u32);
/// (group, topic, queue) of an orderly queue lock.
type LockKey = (String, String, u32);

/// The broker's domain state. Every method takes `&self`; share it in an `Arc`.
pub struct Engine {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    broker_name: String,
    pub(crate) topics_path: PathBuf,
    /// Read-mostly snapshot, replaced whole on create and delete.
    pub(crate) topics: RwLock<Arc<BTreeMap<String, TopicConfig>>>,
    pub(crate) topics_write: Mutex<()>,
    pub(crate) waiters: Mutex<HashMap<QueueKey, Vec<Box<dyn Wake>>>>,
    offsets_path: PathBuf,
    pub(crate) offsets: Mutex<OffsetTable>,
    pub(crate) offsets_dirty: AtomicBool,
    /// On a slave: why writes are refused (`replica.rs`).
    pub(crate) read_only: Mutex<Option<String>>,
    /// On a slave: offsets committed here, to hand to the master.
    pub(crate) local_commits: Mutex<OffsetTable>,
    clients: Mutex<HashMap<String, ClientInfo>>,
    round_robin: AtomicU32,
    coordinator: Mutex<Coordinator>,
    retry: RwLock<(Vec<u64>, u32)>,
    /// Orderly consumption: (group, topic, queue) → (member, expiry ms).
    locks: Mutex<HashMap<LockKey, (String, u64)>>,
    lock_ttl_ms: AtomicU64,
    /// Half messages and scheduled messages (`parked.rs`).
    pub(crate) parked: Parked,
    parked_path: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("broker_name", &self.broker_name).finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Opens the engine over `store`, with its registry files in `config_dir`.
    ///
    /// # Errors
    /// A registry file that cannot be read or parsed.
    pub fn open(store: Arc<Store>, config_dir: impl Into<PathBuf>, broker_name: &str, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        let dir = config_dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::Load { path: dir.clone(), source })?;
        let topics_path = dir.join("topics.json");
        let topics = topics::load(&topics_path).map_err(|source| EngineError::Load { path: topics_path.clone(), source })?;
        let offsets_path = dir.join("offsets.json");
        let offsets: OffsetTable = match std::fs::read(&offsets_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| EngineError::Load {
                path: offsets_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OffsetTable::default(),
            Err(source) => return Err(EngineError::Load { path: offsets_path, source }),
        };
        let engine = Self {
            store,
            clock,
            broker_name: broker_name.to_owned(),
            topics_path,
            topics: RwLock::new(Arc::new(topics)),
            topics_write: Mutex::new(()),
            waiters: Mutex::new(HashMap::new()),
            offsets_path,
            offsets: Mutex::new(offsets),
            offsets_dirty: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            round_robin: AtomicU32::new(0),
            coordinator: Mutex::new(Coordinator::new(GROUP_SESSION_TIMEOUT_MS_DEFAULT)),
            retry: RwLock::new((RETRY_DELAYS_MS_DEFAULT.to_vec(), MAX_RECONSUME_TIMES_DEFAULT)),
            locks: Mutex::new(HashMap::new()),
            lock_ttl_ms: AtomicU64::new(ORDER_LOCK_TTL_MS_DEFAULT),
            parked: Parked::default(),
            read_only: Mutex::new(None),
            local_commits: Mutex::new(OffsetTable::default()),
            parked_path: dir.join("parked.json"),
        };
        for (topic, queues) in [(HALF_TOPIC, 1), (TX_OP_TOPIC, 1), (SCHEDULE_TOPIC, SCHEDULE_QUEUES)] {
            engine
                .ensure_system_topic(topic, queues)
                .map_err(|e| EngineError::Load { path: engine.topics_path.clone(), source: std::io::Error::other(e.to_string()) })?;
        }
        engine.recover_parked(&engine.parked_path)?;
        // Topic retention cuts live in memory: cut again before anything is read (a failure is
        // retried by the periodic pass; it must not keep the broker from starting).
        if let Err(e) = engine.enforce_topic_retention() {
            tracing::warn!(error = %e, "applying topic retention at start failed");
        }
        Ok(engine)
    }

    /// Milliseconds since the epoch on the engine's clock.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn broker_name(&self) -> &str {
        &self.broker_name
    }

    pub(crate) fn snapshot(&self) -> Arc<BTreeMap<String, TopicConfig>> {
        Arc::clone(&self.topics.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.snapshot().get(name).copied()
    }

    pub fn topics(&self) -> Vec<(String, TopicConfig)> {
        self.snapshot().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Creates a topic with `queues` queues.
    ///
    /// # Errors
    /// [`TopicError`]: exists, bad name or queue count, too many topics, registry not saved.
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig, TopicError> {
        self.create(name, queues, None, false)
    }

    /// Creates a topic whose messages stay readable for `retention_ms` (the log's retention
    /// still applies when it is shorter).
    ///
    /// # Errors
    /// As [`Engine::create_topic`]; a retention of 0.
    pub fn create_topic_with_retention(&self, name: &str, queues: u32, retention_ms: u64) -> Result<TopicConfig, TopicError> {
        if retention_ms == 0 {
            return Err(TopicError::Invalid(
                "a retention of 0 ms would keep nothing: give a positive retention_ms, or none for the log's retention".into(),
            ));
        }
        self.create(name, queues, Some(retention_ms), false)
    }

    /// Applies each topic's own retention: per queue, entries stored more than its retention
    /// ago become unreadable. Returns how many entries were cut. Run at open and periodically.
    ///
    /// # Errors
    /// A record that could not be read, an index file that could not be deleted.
    pub fn enforce_topic_retention(&self) -> std::io::Result<u64> {
        let now = self.clock.now_ms();
        let mut cut = 0;
        for (topic, c) in self.snapshot().iter() {
            let Some(retention) = c.retention_ms else { continue };
            for q in 0..c.queues {
                let (min, _) = self.store.queue_bounds(topic, q);
                let keep_from =
                    self.offset_for_time(topic, q, now.saturating_sub(retention)).map_err(|e| std::io::Error::other(e.to_string()))?;
                if keep_from > min {
                    let new_min = self.store.trim_queue(topic, q, keep_from)?;
                    cut += new_min - min;
                }
            }
        }
        Ok(cut)
    }

    /// Creates one of the broker's own topics (`%RETRY%…`, `%DLQ%…`) if it is missing.
    ///
    /// # Errors
    /// As [`Engine::create_topic`], but an existing topic is fine.
    pub fn ensure_system_topic(&self, name: &str, queues: u32) -> Result<TopicConfig, TopicError> {
        if let Some(c) = self.topic(name) {
            return Ok(c);
        }
        match self.create(name, queues, None, true) {
            Err(TopicError::Exists(_)) => Ok(self.topic(name).expect("exists")),
            other => other,
        }
    }

    fn create(&self, name: &str, queues: u32, retention_ms: Option<u64>, system: bool) -> Result<TopicConfig, TopicError> {
        if let Some(why) = self.read_only() {
            return Err(TopicError::ReadOnly(why));
        }
        wasmq_store::validate_topic(name).map_err(|e| TopicError::Invalid(e.to_string()))?;
        if name.starts_with('%') && !system {
            return Err(TopicError::Reserved);
        }
        if queues == 0 || queues > QUEUES_PER_TOPIC_MAX {
            return Err(TopicError::BadQueueCount { queues });
        }
        let _w = lock(&self.topics_write);
        let mut table = (*self.snapshot()).clone();
        if table.contains_key(name) {
            return Err(TopicError::Exists(name.to_owned()));
        }
        if table.len() >= TOPICS_MAX {
            return Err(TopicError::TooMany);
        }
        let config = TopicConfig { queues, created_ms: self.clock.now_ms(), retention_ms };
        table.insert(name.to_owned(), config);
        topics::save_json(&self.topics_path, &table)?;
        *self.topics.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        tracing::info!(topic = name, queues, retention_ms, "topic created");
        Ok(config)
    }

    /// Deletes a topic: it stops taking sends and pulls at once; its consume queues go, and
    /// its messages stay in the log until retention.
    ///
    /// # Errors
    /// Unknown topic, or the registry could not be saved.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        if crate::parked::is_internal_topic(name) {
            return Err(TopicError::Reserved);
        }
        if let Some(why) = self.read_only() {
            return Err(TopicError::ReadOnly(why));
        }
        let _w = lock(&self.topics_write);
        let mut table = (*self.snapshot()).clone();
        if table.remove(name).is_none() {
            return Err(TopicError::Unknown(name.to_owned()));
        }
        topics::save_json(&self.topics_path, &table)?;
        *self.topics.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.store.remove_topic(name)?;
        lock(&self.offsets).remove_topic(name);
        self.offsets_dirty.store(true, Ordering::Release);
        // Pollers on the deleted topic learn it on their next pull.
        let woken: Vec<Box<dyn Wake>> = {
            let mut w = lock(&self.waiters);
            let keys: Vec<QueueKey> = w.keys().filter(|(t, _)| &**t == name).cloned().collect();
            keys.into_iter().flat_map(|k| w.remove(&k).unwrap_or_default()).collect()
        };
        woken.into_iter().for_each(|w| w.wake());
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// A topic with each queue's offsets.
    ///
    /// # Errors
    /// Unknown topic.
    pub fn describe(&self, name: &str) -> Result<TopicStatus, TopicError> {
        let config = self.topic(name).ok_or_else(|| TopicError::Unknown(name.to_owned()))?;
        let queues = (0..config.queues)
            .map(|q| {
                let (min_offset, max_offset) = self.store.queue_bounds(name, q);
                QueueStatus { queue_id: q, min_offset, max_offset }
            })
            .collect();
        Ok(TopicStatus { name: name.to_owned(), queues, created_ms: config.created_ms })
    }

    fn check_queue(&self, topic: &str, queue_id: u32) -> Result<u32, (bool, u32)> {
        match self.topic(topic) {
            None => Err((true, 0)),
            Some(c) if queue_id < c.queues => Ok(c.queues),
            Some(c) => Err((false, c.queues)),
        }
    }

    /// Appends a batch to one queue of a topic (`None`: round robin) and wakes the queue's
    /// long polls. The messages' topic and queue fields are set here. Durability (sync flush)
    /// is the caller's to wait for, with [`Store::on_durable`] on the returned end offset.
    ///
    /// # Errors
    /// [`SendError`].
    pub fn send(&self, topic: &str, queue_id: Option<u32>, mut messages: Vec<NewMessage>) -> Result<(u32, Appended), SendError> {
        let config = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?;
        let queue_id = queue_id.unwrap_or_else(|| self.pick_queue(config.queues));
        for m in &mut messages {
            m.queue_id = queue_id;
        }
        Ok((queue_id, self.append_and_wake(topic, config.queues, messages)?))
    }

    /// Appends several plain sends together (a group append: one writer-lock section, one
    /// `pwrite` of the log and one per consume queue for all of them) and wakes each queue's
    /// long polls once. Each send has its own result, as [`Engine::send`] (or, when `routed`,
    /// [`Engine::send_routed`]) would give it; order is kept.
    pub fn send_many(&self, sends: Vec<PlainSend>) -> Vec<Result<(u32, Appended), SendError>> {
        let mut results: Vec<Result<(u32, Appended), SendError>> = Vec::with_capacity(sends.len());
        let writable = self.writable();
        let mut ready: Vec<(usize, u32, Vec<NewMessage>)> = Vec::with_capacity(sends.len());
        for PlainSend { topic, queue, routed, mut messages } in sends {
            let at = results.len();
            results.push(Err(SendError::Invalid(String::new())));
            if let Err(e) = &writable {
                results[at] = Err(match e {
                    SendError::ReadOnly(why) => SendError::ReadOnly(why.clone()),
                    other => SendError::Invalid(other.to_string()),
                });
                continue;
            }
            let Some(config) = self.topic(&topic) else {
                results[at] = Err(SendError::UnknownTopic(topic));
                continue;
            };
            let queue_id = if routed {
                messages.first().map_or(0, |m| m.queue_id)
            } else {
                let q = queue.unwrap_or_else(|| self.pick_queue(config.queues));
                messages.iter_mut().for_each(|m| m.queue_id = q);
                q
            };
            if let Some(m) = messages.iter().find(|m| m.queue_id >= config.queues) {
                results[at] = Err(SendError::InvalidQueue { topic, queue_id: m.queue_id, queues: config.queues });
                continue;
            }
            for m in &mut messages {
                topic.clone_into(&mut m.topic);
            }
            ready.push((at, queue_id, messages));
        }
        let batches: Vec<&[NewMessage]> = ready.iter().map(|(_, _, m)| m.as_slice()).collect();
        let appended = self.store.append_many(&batches);
        let mut woken: Vec<(&str, u32)> = Vec::new();
        for ((at, queue_id, messages), r) in ready.iter().zip(appended) {
            if r.is_ok() {
                for m in messages {
                    if !woken.contains(&(m.topic.as_str(), m.queue_id)) {
                        woken.push((m.topic.as_str(), m.queue_id));
                    }
                }
            }
            results[*at] = r.map(|a| (*queue_id, a)).map_err(SendError::Append);
        }
        for (topic, queue_id) in woken {
            self.wake(topic, queue_id);
        }
        results
    }

    /// Refuses writes on a slave.
    pub(crate) fn writable(&self) -> Result<(), SendError> {
        match self.read_only() {
            Some(why) => Err(SendError::ReadOnly(why)),
            None => Ok(()),
        }
    }

    /// The next queue of the broker's round robin over `queues` queues.
    pub fn pick_queue(&self, queues: u32) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % queues.max(1)
    }

    /// Appends a batch whose messages each name their queue (as routing plugins decide) as one
    /// contiguous append, and wakes each queue's long polls. The topic field is set here.
    ///
    /// # Errors
    /// [`SendError`]; nothing is stored if any queue is out of range.
    pub fn send_routed(&self, topic: &str, messages: Vec<NewMessage>) -> Result<Appended, SendError> {
        let config = self.topic(topic).ok_or_else(|| SendError::UnknownTopic(topic.to_owned()))?;
        self.append_and_wake(topic, config.queues, messages)
    }

    /// The append shared by both sends: checks every queue, appends, wakes each queue once.
    fn append_and_wake(&self, topic: &str, queues: u32, mut messages: Vec<NewMessage>) -> Result<Appended, SendError> {
        self.writable()?;
        if let Some(m) = messages.iter().find(|m| m.queue_id >= queues) {
            return Err(SendError::InvalidQueue { topic: topic.to_owned(), queue_id: m.queue_id, queues });
        }
        for m in &mut messages {
            topic.clone_into(&mut m.topic);
        }
        let appended = self.store.append(&messages)?;
        // Most batches go to one queue: that case allocates nothing.
        let first = messages.first().map(|m| m.queue_id);
        if let Some(q) = first {
            self.wake(topic, q);
        }
        let mut others: Vec<u32> = Vec::new();
        for m in &messages {
            if Some(m.queue_id) != first && !others.contains(&m.queue_id) {
                others.push(m.queue_id);
                self.wake(topic, m.queue_id);
            }
        }
        Ok(appended)
    }

    pub(crate) fn wake(&self, topic: &str, queue_id: u32) {
        let woken = {
            let mut w = lock(&self.waiters);
            if w.is_empty() {
                return;
            }
            w.remove(&(Arc::from(topic), queue_id))
        };
        for w in woken.into_iter().flatten() {
            w.wake();
        }
    }

    /// Reads a queue.
    ///
    /// # Errors
    /// [`PullError`].
    pub fn pull(&self, topic: &str, queue_id: u32, offset: u64, max_messages: usize, max_bytes: usize) -> Result<QueueRead, PullError> {
        match self.check_queue(topic, queue_id) {
            Ok(_) => {}
            Err((true, _)) => return Err(PullError::UnknownTopic(topic.to_owned())),
            Err((false, queues)) => return Err(PullError::InvalidQueue { topic: topic.to_owned(), queue_id, queues }),
        }
        let read = self.store.read_queue(topic, queue_id, offset, max_messages, max_bytes)?;
        Ok(self.hold_until_due(topic, read))
    }

    /// Parks `waker` until the queue has a message at `offset` or later. Returns it back if
    /// there is one already (pull again now), or if the queue has too many waiters.
    pub fn wait_for(&self, topic: &str, queue_id: u32, offset: u64, waker: Box<dyn Wake>) -> Option<Box<dyn Wake>> {
        let mut w = lock(&self.waiters);
        if self.store.is_readable(topic, queue_id, offset) || self.topic(topic).is_none() {
            return Some(waker);
        }
        let list = w.entry((Arc::from(topic), queue_id)).or_default();
        list.retain(|x| !x.is_cancelled());
        if list.len() >= WAITERS_PER_QUEUE_MAX {
            return Some(waker);
        }
        list.push(waker);
        None
    }

    /// Sets how long a silent group member keeps its queues.
    pub fn set_session_timeout(&self, timeout_ms: u64) {
        *lock(&self.coordinator) = Coordinator::new(timeout_ms);
    }

    fn queues_of(&self) -> impl Fn(&str) -> Option<u32> + '_ {
        let snapshot = self.snapshot();
        move |t: &str| snapshot.get(t).map(|c| c.queues)
    }

    /// Sets the redelivery delays (one per reconsume count; the last repeats) and the maximum
    /// number of reconsumes before the dead-letter topic.
    ///
    /// # Errors
    /// No delays, or more than 64.
    pub fn set_retry_policy(&self, delays_ms: Vec<u64>, max_reconsume_times: u32) -> Result<(), EngineError> {
        if delays_ms.is_empty() || delays_ms.len() > 64 {
            return Err(EngineError::Invalid("retry delays: 1 to 64 values".into()));
        }
        *self.retry.write().unwrap_or_else(|e| e.into_inner()) = (delays_ms, max_reconsume_times);
        Ok(())
    }

    /// Sets how long an orderly queue lock lasts unless renewed.
    pub fn set_lock_ttl(&self, ttl_ms: u64) {
        self.lock_ttl_ms.store(ttl_ms, Ordering::Release);
    }

    /// Orderly consumption: takes or renews a group's lock on a queue for `member`. Granted when
    /// the queue is unlocked, its lock expired, or `member` holds it. Returns the grant and how
    /// long it lasts. While one member holds it, no other member of the group may consume the
    /// queue, so a queue is processed by one member at a time, in offset order.
    ///
    /// # Errors
    /// Invalid group, too many locks.
    pub fn lock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) -> Result<(bool, u64), EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let now = self.clock.now_ms();
        let ttl = self.lock_ttl_ms.load(Ordering::Acquire);
        let mut locks = lock(&self.locks);
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        match locks.get(&key) {
            Some((holder, expires)) if holder != member && *expires > now => Ok((false, 0)),
            _ => {
                if locks.len() >= ORDER_LOCKS_MAX && !locks.contains_key(&key) {
                    locks.retain(|_, (_, e)| *e > now);
                    if locks.len() >= ORDER_LOCKS_MAX {
                        return Err(EngineError::Invalid(format!("more than {ORDER_LOCKS_MAX} queue locks")));
                    }
                }
                locks.insert(key, (member.to_owned(), now + ttl));
                Ok((true, ttl))
            }
        }
    }

    /// Releases `member`'s lock on a queue (a lock held by another member is left alone).
    pub fn unlock_queue(&self, group: &str, member: &str, topic: &str, queue_id: u32) {
        let mut locks = lock(&self.locks);
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        if locks.get(&key).is_some_and(|(holder, _)| holder == member) {
            locks.remove(&key);
        }
    }

    /// A consumer failed a message: schedule it again through the group's retry topic (at the
    /// delay of its new reconsume count), or move it to the dead-letter topic past the maximum.
    /// The message keeps its body, unique id, keys and tags, and records its origin topic.
    ///
    /// `max_reconsume_times`: the group's own maximum, or `None` for the broker's.
    ///
    /// # Errors
    /// Unknown message (not at `log_offset` of that topic and queue), or the append failed.
    pub fn send_back(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        log_offset: u64,
        dead_letter: bool,
        max_reconsume_times: Option<u32>,
    ) -> Result<SendBackOutcome, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let m = self.store.read(log_offset).map_err(|e| EngineError::Invalid(e.to_string()))?;
        if m.topic != topic || m.queue_id != queue_id {
            return Err(EngineError::Invalid(format!("no message of {topic}/{queue_id} at log offset {log_offset}")));
        }
        let (delays, default_max) = self.retry.read().unwrap_or_else(|e| e.into_inner()).clone();
        let max = max_reconsume_times.unwrap_or(default_max);
        let reconsume_times = m.properties.reconsume_times + 1;
        let mut properties = m.properties;
        properties.reconsume_times = reconsume_times;
        if !properties.user.iter().any(|(k, _)| k == ORIGIN_TOPIC_PROPERTY) {
            properties.user.push((ORIGIN_TOPIC_PROPERTY.to_owned(), m.topic.clone()));
        }
        let save = |e: SendError| match e {
            SendError::ReadOnly(why) => EngineError::ReadOnly(why),
            e => EngineError::Invalid(e.to_string()),
        };
        if reconsume_times > max || dead_letter {
            let dlq = dlq_topic(group);
            self.ensure_system_topic(&dlq, 1).map_err(|e| EngineError::Invalid(e.to_string()))?;
            properties.delivery_ms = None;
            let msg = NewMessage { topic: dlq.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
            self.send(&dlq, Some(0), vec![msg]).map_err(save)?;
            tracing::info!(group, topic, reconsume_times, "message moved to the dead-letter topic");
            return Ok(SendBackOutcome::DeadLetter { reconsume_times });
        }
        let retry = retry_topic(group);
        self.ensure_system_topic(&retry, delays.len() as u32).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let level = (reconsume_times as usize).min(delays.len());
        let due_ms = self.clock.now_ms() + delays[level - 1];
        properties.delivery_ms = Some(due_ms);
        let msg = NewMessage { topic: retry.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
        self.send(&retry, Some(level as u32 - 1), vec![msg]).map_err(save)?;
        Ok(SendBackOutcome::Retry { reconsume_times, due_ms })
    }

    /// Sends a dead-lettered message (at `queue_offset` of the group's DLQ) back to the topic it
    /// first came from, as a new message with its reconsume count reset; returns its new queue
    /// and queue offset. The DLQ copy stays (a DLQ is an audit trail).
    ///
    /// # Errors
    /// No such dead letter, its origin topic is gone, or the append failed.
    pub fn resend_dead_letter(&self, group: &str, queue_offset: u64) -> Result<(String, u32, u64), EngineError> {
        let dlq = dlq_topic(group);
        let read = self.pull(&dlq, 0, queue_offset, 1, usize::MAX).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let m = read
            .messages
            .into_iter()
            .next()
            .filter(|m| m.queue_offset == queue_offset)
            .ok_or_else(|| EngineError::Invalid(format!("no dead letter at offset {queue_offset} of {dlq}")))?;
        let mut properties = m.properties;
        let origin = properties.user.iter().find(|(k, _)| k == ORIGIN_TOPIC_PROPERTY).map(|(_, v)| v.clone()).unwrap_or_default();
        properties.user.retain(|(k, _)| k != ORIGIN_TOPIC_PROPERTY);
        properties.reconsume_times = 0;
        properties.delivery_ms = None;
        let msg = NewMessage { topic: origin.clone(), queue_id: 0, born_ms: m.born_ms, flags: m.flags, properties, body: m.body };
        let (queue_id, appended) = self.send(&origin, None, vec![msg]).map_err(|e| EngineError::Invalid(e.to_string()))?;
        tracing::info!(group, origin, queue_offset, "dead letter resent");
        Ok((origin, queue_id, appended.messages[0].queue_offset))
    }

    /// Retry topics deliver a message only once due: a pull stops at the first message whose
    /// delivery time is still ahead (each retry queue holds one delay, so it is in due order).
    /// When the message at `offset` of a retry queue becomes due, if it is held now: a long
    /// poll that found nothing due sleeps until then instead of looking again and again.
    #[must_use]
    pub fn held_until(&self, topic: &str, queue_id: u32, offset: u64) -> Option<u64> {
        if !topic.starts_with("%RETRY%") {
            return None;
        }
        let read = self.store.read_queue(topic, queue_id, offset, 1, usize::MAX).ok()?;
        let due = read.messages.first()?.properties.delivery_ms?;
        (due > self.clock.now_ms()).then_some(due)
    }

    fn hold_until_due(&self, topic: &str, mut read: QueueRead) -> QueueRead {
        if !topic.starts_with("%RETRY%") {
            return read;
        }
        let now = self.clock.now_ms();
        if let Some(i) = read.messages.iter().position(|m| m.properties.delivery_ms.is_some_and(|d| d > now)) {
            read.next_offset = read.messages[i].queue_offset;
            read.messages.truncate(i);
        }
        read
    }

    /// A group member joins or heartbeats; returns its assignment.
    ///
    /// # Errors
    /// Invalid names or filters, mode conflicts, limits.
    pub fn group_heartbeat(
        &self,
        group: &str,
        member: &str,
        mode: GroupMode,
        subscriptions: Vec<(String, String)>,
    ) -> Result<Assignment, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        if member.is_empty() || member.len() > 255 {
            return Err(EngineError::Invalid("client id must be 1..=255 bytes".into()));
        }
        let mut subs: std::collections::BTreeMap<String, String> = subscriptions.into_iter().collect();
        if mode == GroupMode::Clustering {
            // Clustering members also read the group's retry topic, shared out like the rest.
            let queues = self.retry.read().unwrap_or_else(|e| e.into_inner()).0.len() as u32;
            let retry = retry_topic(group);
            match self.ensure_system_topic(&retry, queues) {
                Ok(_) => {
                    subs.entry(retry).or_insert_with(|| "*".to_owned());
                }
                // A slave reads the retry topic once its master has created it.
                Err(TopicError::ReadOnly(_)) => {}
                Err(e) => return Err(EngineError::Invalid(e.to_string())),
            }
        }
        let now = self.clock.now_ms();
        lock(&self.coordinator).heartbeat(group, member, mode, subs, now, self.queues_of()).map_err(EngineError::Invalid)
    }

    pub fn group_leave(&self, group: &str, member: &str) {
        lock(&self.coordinator).leave(group, member, self.queues_of());
    }

    /// Drops group members that stopped heartbeating; returns how many.
    pub fn expire_members(&self) -> usize {
        let now = self.clock.now_ms();
        lock(&self.coordinator).expire(now, &self.queues_of())
    }

    /// Commits an offset for a member that must still own the queue at this generation.
    ///
    /// # Errors
    /// [`FenceError`] (as `Fenced`), or an invalid queue.
    pub fn group_commit(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), GroupCommitError> {
        lock(&self.coordinator).check_commit(group, member, generation, topic, queue_id).map_err(GroupCommitError::Fenced)?;
        self.commit_offset(group, topic, queue_id, offset).map_err(GroupCommitError::Engine)
    }

    pub fn describe_group(&self, group: &str) -> Option<GroupView> {
        lock(&self.coordinator).describe(group, self.queues_of())
    }

    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = lock(&self.coordinator).groups();
        g.extend(lock(&self.offsets).groups.keys().cloned());
        g.sort();
        g.dedup();
        g
    }

    /// The first queue offset whose message was stored at or after `ts_ms` (the queue's end if
    /// none): a binary search over store times, which never decrease along a queue.
    ///
    /// # Errors
    /// A record that cannot be read.
    pub fn offset_for_time(&self, topic: &str, queue_id: u32, ts_ms: u64) -> Result<u64, PullError> {
        let (min, max) = self.store.queue_bounds(topic, queue_id);
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.store.queue_entries(topic, queue_id, mid, 1)?;
            let Some(e) = e.first() else { break };
            if self.store.read(e.log_offset)?.store_ms < ts_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Sets a group's offsets for every queue of `topic`.
    ///
    /// # Errors
    /// Unknown topic, a bad target, or live members in clustering (they would commit over it).
    pub fn reset_offsets(&self, group: &str, topic: &str, to: &str) -> Result<Vec<(u32, u64)>, EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        let config = self.topic(topic).ok_or_else(|| EngineError::Invalid(format!("topic {topic} does not exist")))?;
        let mut set = Vec::new();
        for q in 0..config.queues {
            let (min, max) = self.store.queue_bounds(topic, q);
            let offset = match to {
                "earliest" => min,
                "latest" => max,
                ts => {
                    let ts: u64 = ts.parse().map_err(|_| EngineError::Invalid(format!("{ts:?}: earliest, latest or a timestamp in ms")))?;
                    self.offset_for_time(topic, q, ts).map_err(|e| EngineError::Invalid(e.to_string()))?
                }
            };
            set.push((q, offset));
        }
        let mut offsets = lock(&self.offsets);
        for &(q, o) in &set {
            offsets.set(group, topic, q, o);
        }
        drop(offsets);
        self.offsets_dirty.store(true, Ordering::Release);
        tracing::info!(group, topic, to, "group offsets reset");
        Ok(set)
    }

    /// Deletes a group's offsets.
    ///
    /// # Errors
    /// The group has live members, or does not exist.
    pub fn delete_group(&self, group: &str) -> Result<(), EngineError> {
        if self.describe_group(group).is_some_and(|g| !g.members.is_empty()) {
            return Err(EngineError::Invalid(format!("group {group} has live members; stop them first")));
        }
        if lock(&self.offsets).groups.remove(group).is_none() {
            return Err(EngineError::Invalid(format!("group {group} does not exist")));
        }
        self.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads a queue, keeping only messages whose tag passes `filter` (decided on the consume
    /// queue's tag hashes; the log is read only for messages that pass). `next_offset` moves
    /// past skipped messages too, so a group's offset advances through filtered-out ones.
    ///
    /// # Errors
    /// [`PullError`]; a bad filter is [`PullError::Filter`].
    pub fn pull_filtered(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        filter: &str,
    ) -> Result<QueueRead, PullError> {
        let filter = TagFilter::parse(filter).map_err(PullError::Filter)?;
        if filter == TagFilter::All {
            return self.pull(topic, queue_id, offset, max_messages, max_bytes);
        }
        match self.check_queue(topic, queue_id) {
            Ok(_) => {}
            Err((true, _)) => return Err(PullError::UnknownTopic(topic.to_owned())),
            Err((false, queues)) => return Err(PullError::InvalidQueue { topic: topic.to_owned(), queue_id, queues }),
        }
        let (min_offset, max_offset) = self.store.queue_bounds(topic, queue_id);
        let entries = self.store.queue_entries(topic, queue_id, offset, FILTER_SCAN_MAX)?;
        let mut messages = Vec::new();
        let mut next = offset.max(min_offset);
        let mut n_bytes = 0usize;
        for e in entries {
            if messages.len() >= max_messages || (!messages.is_empty() && n_bytes + e.size as usize > max_bytes) {
                break;
            }
            if filter.matches(e.tag_hash) {
                messages.push(self.store.read(e.log_offset)?);
                n_bytes += e.size as usize;
            }
            next += 1;
        }
        Ok(self.hold_until_due(topic, QueueRead { messages, next_offset: next, min_offset, max_offset }))
    }

    /// Commits a group's offset for a queue.
    ///
    /// # Errors
    /// Invalid group, unknown topic or queue.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<(), EngineError> {
        topics::validate_group(group).map_err(EngineError::Invalid)?;
        self.check_queue(topic, queue_id).map_err(|_| EngineError::Invalid(format!("no queue {queue_id} in topic {topic}")))?;
        lock(&self.offsets).set(group, topic, queue_id, offset);
        self.offsets_dirty.store(true, Ordering::Release);
        if lock(&self.read_only).is_some() {
            lock(&self.local_commits).set(group, topic, queue_id, offset);
        }
        Ok(())
    }

    pub fn query_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        lock(&self.offsets).get(group, topic, queue_id)
    }

    pub fn offsets(&self) -> OffsetTable {
        lock(&self.offsets).clone()
    }

    /// Writes the offsets to disk if they changed.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn persist_offsets(&self) -> Result<(), EngineError> {
        self.save_watermarks(&self.parked_path).map_err(|source| EngineError::Save { path: self.parked_path.clone(), source })?;
        if !self.offsets_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let table = lock(&self.offsets).clone();
        topics::save_json(&self.offsets_path, &table).map_err(|source| {
            self.offsets_dirty.store(true, Ordering::Release);
            EngineError::Save { path: self.offsets_path.clone(), source }
        })
    }

    /// Records that a client is alive.
    ///
    /// # Errors
    /// Invalid group names, or too many clients.
    pub fn heartbeat(&self, client_id: &str, producer_groups: Vec<String>, consumer_groups: Vec<String>) -> Result<(), EngineError> {
        for g in producer_groups.iter().chain(&consumer_groups) {
            topics::validate_group(g).map_err(EngineError::Invalid)?;
        }
        let mut clients = lock(&self.clients);
        if clients.len() >= CLIENTS_MAX && !clients.contains_key(client_id) {
            return Err(EngineError::Invalid(format!("more than {CLIENTS_MAX} clients")));
        }
        clients.insert(client_id.to_owned(), ClientInfo { last_seen_ms: self.clock.now_ms(), producer_groups, consumer_groups });
        Ok(())
    }

    pub fn clients(&self) -> HashMap<String, ClientInfo> {
        lock(&self.clients).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use wasmq_store::{ManualClock, StoreConfig};

    struct Count(Arc<AtomicUsize>, Arc<AtomicBool>);
    impl Wake for Count {
        fn wake(self: Box<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn is_cancelled(&self) -> bool {
            self.1.load(Ordering::SeqCst)
        }
    }

    fn engine(dir: &std::path::Path) -> Engine {
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.join("store"))).unwrap();
        Engine::open(Arc::new(store), dir.join("config"), "b0", Arc::new(ManualClock::new(5))).unwrap()
    }

    fn msg(body: &str) -> NewMessage {
        NewMessage { body: bytes::Bytes::copy_from_slice(body.as_bytes()), ..Default::default() }
    }

    /// Sends appended together each get what a send of their own would: refusals alone, queues
    /// round robin or as named, order within each queue, one wake per queue.
    #[test]
    fn sends_appended_together_keep_their_own_results_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path().join("store"))).unwrap();
        let e = Engine::open(Arc::new(store), dir.path().join("config"), "b0", Arc::new(wasmq_store::SystemClock)).unwrap();
        e.create_topic("t", 2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        struct W(std::sync::mpsc::Sender<()>);
        impl Wake for W {
            fn wake(self: Box<Self>) {
                let _ = self.0.send(());
            }
            fn is_cancelled(&self) -> bool {
                false
            }
        }
        assert!(e.wait_for("t", 1, 0, Box::new(W(tx))).is_none(), "parked on an empty queue");
        let plain = |topic: &str, queue: Option<u32>, bodies: &[&str]| PlainSend {
            topic: topic.into(),
            queue,
            routed: false,
            messages: bodies.iter().map(|b| msg(b)).collect(),
        };
        let mut routed = plain("t", None, &["r1", "r0"]);
        routed.routed = true;
        routed.messages[0].queue_id = 1;
        let results = e.send_many(vec![
            plain("t", Some(0), &["a", "b"]),
            plain("nope", None, &["x"]),
            plain("t", Some(5), &["y"]),
            routed,
            plain("t", Some(1), &["c"]),
        ]);
        assert!(matches!(&results[1], Err(SendError::UnknownTopic(t)) if t == "nope"));
        assert!(matches!(&results[2], Err(SendError::InvalidQueue { queue_id: 5, queues: 2, .. })));
        let (q0, a0) = results[0].as_ref().unwrap();
        assert_eq!((*q0, a0.messages.iter().map(|m| m.queue_offset).collect::<Vec<_>>()), (0, vec![0, 1]));
        let (q3, a3) = results[3].as_ref().unwrap();
        assert_eq!((*q3, a3.messages.iter().map(|m| m.queue_offset).collect::<Vec<_>>()), (1, vec![0, 2]), "r1 on 1, r0 on 0");
        assert_eq!(results[4].as_ref().unwrap().0, 1);
        let bodies = |q| -> Vec<String> {
            e.pull("t", q, 0, 10, 1 << 20).unwrap().messages.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect()
        };
        assert_eq!(bodies(0), ["a", "b", "r0"]);
        assert_eq!(bodies(1), ["r1", "c"]);
        rx.recv_timeout(std::time::Duration::from_secs(1)).expect("queue 1's long poll woken");
        // A slave refuses them all.
        e.set_read_only("a slave");
        assert!(e.send_many(vec![plain("t", None, &["z"])]).iter().all(|r| matches!(r, Err(SendError::ReadOnly(_)))));
    }

    #[test]
    fn topics_sends_pulls_waiters_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        assert!(matches!(e.send("t", None, vec![msg("x")]), Err(SendError::UnknownTopic(_))));
        e.create_topic("t", 4).unwrap();
        assert!(matches!(e.create_topic("t", 4), Err(TopicError::Exists(_))));
        assert!(matches!(e.create_topic("%RETRY%g", 1), Err(TopicError::Reserved)));
        assert!(matches!(e.create_topic("u", 0), Err(TopicError::BadQueueCount { .. })));
        assert!(matches!(e.send("t", Some(4), vec![msg("x")]), Err(SendError::InvalidQueue { queues: 4, .. })));
        let picked: Vec<u32> = (0..8).map(|_| e.send("t", None, vec![msg("x")]).unwrap().0).collect();
        assert_eq!(picked, vec![0, 1, 2, 3, 0, 1, 2, 3], "round robin");

        let woken = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicBool::new(false));
        assert!(e.wait_for("t", 1, 0, Box::new(Count(woken.clone(), cancelled.clone()))).is_some(), "data is there: no wait");
        assert!(e.wait_for("t", 1, 2, Box::new(Count(woken.clone(), cancelled.clone()))).is_none());
        e.send("t", Some(2), vec![msg("other queue")]).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        e.send("t", Some(1), vec![msg("y")]).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let read = e.pull("t", 1, 2, 10, 1 << 20).unwrap();
        assert_eq!(read.messages[0].body, "y");

        e.commit_offset("g1", "t", 1, 3).unwrap();
        assert_eq!(e.query_offset("g1", "t", 1), Some(3));
        assert!(e.commit_offset("g1", "t", 9, 3).is_err());
        e.persist_offsets().unwrap();
        e.heartbeat("c1", vec!["pg".into()], vec!["g1".into()]).unwrap();
        assert!(e.heartbeat("c1", vec!["bad group!".into()], vec![]).is_err());
        assert_eq!(e.describe("t").unwrap().queues[1].max_offset, 3);
        drop(e);

        let e = engine(dir.path());
        assert_eq!(e.topic("t").map(|c| c.queues), Some(4), "topics persist");
        assert_eq!(e.query_offset("g1", "t", 1), Some(3), "offsets persist");
        e.delete_topic("t").unwrap();
        assert!(matches!(e.pull("t", 0, 0, 1, 1), Err(PullError::UnknownTopic(_))));
        assert_eq!(e.query_offset("g1", "t", 1), None);
        e.create_topic("t", 2).unwrap();
        assert_eq!(
            e.describe("t").unwrap().queues[0],
            QueueStatus { queue_id: 0, min_offset: 0, max_offset: 0 },
            "a new topic starts empty"
        );
    }

    #[test]
    fn filtered_pulls_and_fenced_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        e.create_topic("tags", 1).unwrap();
        let tagged = |t: &str| {
            let mut m = msg(t);
            m.properties.tags = Some(t.to_owned());
            m
        };
        e.send("tags", Some(0), ["A", "C", "B", "C", "C", "A"].into_iter().map(tagged).collect()).unwrap();
        let r = e.pull_filtered("tags", 0, 0, 10, 1 << 20, "A || B").unwrap();
        let bodies: Vec<_> = r.messages.iter().map(|m| m.body.clone()).collect();
        assert_eq!(bodies, vec!["A", "B", "A"]);
        assert_eq!(r.next_offset, 6, "filtered-out messages advance the offset");
        let r = e.pull_filtered("tags", 0, 0, 2, 1 << 20, "C").unwrap();
        assert_eq!((r.messages.len(), r.next_offset), (2, 4), "stops after max messages, continues after the last one read");
        assert!(matches!(e.pull_filtered("tags", 0, 0, 2, 1 << 20, "A ||"), Err(PullError::Filter(_))));

        let a = e.group_heartbeat("g", "m1", GroupMode::Clustering, vec![("tags".into(), "*".into())]).unwrap();
        assert!(a.queues.contains(&("tags".to_owned(), 0)));
        assert_eq!(a.queues.len(), 1 + RETRY_DELAYS_MS_DEFAULT.len(), "plus the group's retry queues");
        e.group_commit("g", "m1", a.generation, "tags", 0, 6).unwrap();
        assert_eq!(e.query_offset("g", "tags", 0), Some(6));
        let b = e.group_heartbeat("g", "m2", GroupMode::Clustering, vec![("tags".into(), "*".into())]).unwrap();
        assert!(matches!(e.group_commit("g", "m1", a.generation, "tags", 0, 7), Err(GroupCommitError::Fenced(_))), "stale generation");
        assert!(b.generation > a.generation);
        e.group_leave("g", "m1");
        assert_eq!(e.describe_group("g").unwrap().members.len(), 1);
    }

    #[test]
    fn topic_retention_cuts_old_messages_and_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let open = |clock: &Arc<ManualClock>| {
            let store_config = StoreConfig::small_for_tests(dir.path().join("store"));
            let (store, _) = Store::open_with(store_config, clock.clone(), Arc::new(wasmq_store::StatvfsProbe)).unwrap();
            Engine::open(Arc::new(store), dir.path().join("config"), "b0", clock.clone()).unwrap()
        };
        let e = open(&clock);
        assert!(matches!(e.create_topic_with_retention("short", 1, 0), Err(TopicError::Invalid(_))));
        e.create_topic_with_retention("short", 1, 10_000).unwrap();
        e.create_topic("long", 1).unwrap();
        for t in ["short", "long"] {
            e.send(t, Some(0), vec![msg("old"); 3]).unwrap();
        }
        clock.advance_ms(6_000);
        for t in ["short", "long"] {
            e.send(t, Some(0), vec![msg("new"); 2]).unwrap();
        }
        assert_eq!(e.enforce_topic_retention().unwrap(), 0, "nothing is 10 s old yet");
        clock.advance_ms(5_000);
        assert_eq!(e.enforce_topic_retention().unwrap(), 3);
        assert_eq!(e.store().queue_bounds("short", 0), (3, 5), "the three old ones are cut");
        assert_eq!(e.store().queue_bounds("long", 0), (0, 5), "a topic without its own retention keeps all");
        assert!(
            matches!(e.pull("short", 0, 0, 10, 1 << 20), Err(PullError::Read(ReadError::Trimmed { min: 3, .. }))),
            "a reader below the cut is told where the queue starts now"
        );
        drop(e);
        // The cut lives in memory; a restart makes it again before anything is read.
        let e = open(&clock);
        assert_eq!(e.store().queue_bounds("short", 0), (3, 5));
        assert_eq!(e.topic("short").unwrap().retention_ms, Some(10_000));
    }

    #[test]
    fn send_back_retries_with_delays_then_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path().join("store"))).unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let e = Engine::open(Arc::new(store), dir.path().join("config"), "b0", clock.clone()).unwrap();
        e.set_retry_policy(vec![100, 300], 3).unwrap();
        e.create_topic("jobs", 1).unwrap();
        let mut m = msg("work");
        m.properties.unique_id = Some("id-1".into());
        let (_, a) = e.send("jobs", Some(0), vec![m]).unwrap();
        let mut at = ("jobs".to_owned(), 0u32, a.messages[0].log_offset);
        let mut seen = Vec::new();
        for attempt in 1..=4u32 {
            let outcome = e.send_back("g", &at.0, at.1, at.2, false, None).unwrap();
            if attempt == 4 {
                assert_eq!(outcome, SendBackOutcome::DeadLetter { reconsume_times: 4 });
                break;
            }
            let SendBackOutcome::Retry { reconsume_times, due_ms } = outcome else { panic!("{outcome:?}") };
            assert_eq!(reconsume_times, attempt);
            assert_eq!(due_ms, clock.now_ms() + if attempt == 1 { 100 } else { 300 }, "the last delay repeats");
            let q = attempt.min(2) - 1;
            let retry = retry_topic("g");
            let offset = e.store().queue_bounds(&retry, q).1 - 1;
            assert!(e.pull(&retry, q, offset, 10, 1 << 20).unwrap().messages.is_empty(), "never early");
            clock.set_ms(due_ms);
            let r = e.pull(&retry, q, offset, 10, 1 << 20).unwrap();
            let got = &r.messages[0];
            assert_eq!(
                (got.properties.reconsume_times, got.properties.unique_id.as_deref(), &got.body[..]),
                (attempt, Some("id-1"), &b"work"[..])
            );
            assert!(got.properties.user.contains(&(ORIGIN_TOPIC_PROPERTY.to_owned(), "jobs".to_owned())));
            seen.push(got.log_offset);
            at = (retry, q, got.log_offset);
        }
        let dlq = e.pull(&dlq_topic("g"), 0, 0, 10, 1 << 20).unwrap();
        assert_eq!(dlq.messages.len(), 1);
        assert_eq!(dlq.messages[0].properties.reconsume_times, 4);
        assert!(e.send_back("g", "jobs", 0, 12_345, false, None).is_err(), "no message there");
        let first = e.pull("jobs", 0, 0, 1, 1 << 20).unwrap().messages[0].log_offset;
        assert_eq!(
            e.send_back("g", "jobs", 0, first, true, None).unwrap(),
            SendBackOutcome::DeadLetter { reconsume_times: 1 },
            "orderly: straight to the DLQ"
        );
        assert_eq!(
            e.send_back("g2", "jobs", 0, first, false, Some(0)).unwrap(),
            SendBackOutcome::DeadLetter { reconsume_times: 1 },
            "a group's own maximum wins over the broker's"
        );

        // Queue locks: one member at a time; expiry frees it; only the holder unlocks.
        e.set_lock_ttl(1_000);
        assert_eq!(e.lock_queue("g", "m1", "jobs", 0).unwrap(), (true, 1_000));
        assert!(!e.lock_queue("g", "m2", "jobs", 0).unwrap().0);
        assert!(e.lock_queue("g", "m1", "jobs", 0).unwrap().0, "renewal");
        e.unlock_queue("g", "m2", "jobs", 0);
        assert!(!e.lock_queue("g", "m2", "jobs", 0).unwrap().0, "m2 cannot release m1's lock");
        clock.advance_ms(1_001);
        assert!(e.lock_queue("g", "m2", "jobs", 0).unwrap().0, "expired: m2 takes it");
        e.unlock_queue("g", "m2", "jobs", 0);
        assert!(e.lock_queue("g", "m1", "jobs", 0).unwrap().0);
    }
}
