//! The engine: one per broker, shared by every connection.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use wasmq_store::{AppendError, Appended, Clock, NewMessage, QueueRead, ReadError, Store};

use crate::groups::{Assignment, Coordinator, FenceError, GroupMode, GroupView, TagFilter};
use crate::offsets::OffsetTable;
use crate::parked::{HALF_TOPIC, Parked, SCHEDULE_QUEUES, SCHEDULE_TOPIC, TX_OP_TOPIC};
mod consumers;
mod delivery;
mod receipt_log;
mod receipts;
mod registry;
pub use consumers::GroupSettings;
pub use receipt_log::RECEIPTS_TOPIC;
pub use receipts::{
    RECEIVED_PER_QUEUE_MAX, RENEW_AHEAD_MS, RENEW_CLIENT_SILENT_MS, RENEW_MAX_MS, RENEW_SLICE_MS, Receipt, ReceiptError, Receive, Received,
};

use crate::topics::{self, MessageType, QUEUES_PER_TOPIC_MAX, QueueStatus, TOPICS_MAX, TopicConfig, TopicError, TopicOptions, TopicStatus};

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
    /// Which protocol it speaks (`native`, `grpc`) and what it says it is.
    pub about: ClientAbout,
}

/// What a client says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAbout {
    pub protocol: String,
    pub language: String,
    pub version: String,
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

/// The broker's domain state. Every method takes `&self`; share it in an `Arc`. Each concept
/// owns its state: the topic registry (`engine/registry.rs`), delivery and long polls
/// (`engine/delivery.rs`), consumers — groups, offsets, locks, retries (`engine/consumers.rs`) —
/// and held messages — transactions and the schedule (`parked.rs`).
pub struct Engine {
    pub(crate) store: Arc<Store>,
    pub(crate) clock: Arc<dyn Clock>,
    broker_name: String,
    pub(crate) topics: registry::Topics,
    pub(crate) delivery: delivery::Delivery,
    pub(crate) consumers: consumers::Consumers,
    /// On a slave: why writes are refused (`replica.rs`).
    pub(crate) read_only: Mutex<Option<String>>,
    /// A slave's: its log arrives from the master, and its held messages are not tracked as
    /// they arrive (`replica.rs`).
    pub(crate) follows: std::sync::atomic::AtomicBool,
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
        let settings_path = dir.join("groups.json");
        let settings = match std::fs::read(&settings_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| EngineError::Load {
                path: settings_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(EngineError::Load { path: settings_path, source }),
        };
        let engine = Self {
            store,
            clock,
            broker_name: broker_name.to_owned(),
            topics: registry::Topics {
                path: topics_path,
                map: RwLock::new(Arc::new(topics)),
                write: Mutex::new(()),
                round_robin: AtomicU32::new(0),
            },
            delivery: delivery::Delivery::default(),
            consumers: consumers::Consumers {
                offsets_path,
                offsets: Mutex::new(offsets),
                offsets_dirty: AtomicBool::new(false),
                local_commits: Mutex::new(OffsetTable::default()),
                clients: Mutex::new(HashMap::new()),
                coordinator: Mutex::new(Coordinator::new(GROUP_SESSION_TIMEOUT_MS_DEFAULT)),
                retry: RwLock::new((RETRY_DELAYS_MS_DEFAULT.to_vec(), MAX_RECONSUME_TIMES_DEFAULT)),
                locks: Mutex::new(HashMap::new()),
                lock_ttl_ms: AtomicU64::new(ORDER_LOCK_TTL_MS_DEFAULT),
                receipts: receipts::Receipts::new(dir.join(crate::parked::RECEIVE_STATE_FILE)),
                settings_path,
                settings: Mutex::new(settings),
            },
            read_only: Mutex::new(None),
            follows: std::sync::atomic::AtomicBool::new(false),
            parked: Parked::default(),
            parked_path: dir.join(crate::parked::WATERMARKS_FILE),
        };
        for (topic, queues) in [
            (HALF_TOPIC, 1),
            (TX_OP_TOPIC, 1),
            (SCHEDULE_TOPIC, SCHEDULE_QUEUES),
            (receipt_log::RECEIPTS_TOPIC, 1),
            (crate::parked::RECALLED_TOPIC, 1),
        ] {
            engine
                .ensure_system_topic(topic, queues)
                .map_err(|e| EngineError::Load { path: engine.topics.path.clone(), source: std::io::Error::other(e.to_string()) })?;
        }
        engine.recover_parked(&engine.parked_path)?;
        engine.recover_receipts()?;
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
        let retention = |ms| TopicOptions { retention_ms: Some(ms), ..TopicOptions::default() };
        assert!(matches!(e.create_topic_with("short", 1, retention(0)), Err(TopicError::Invalid(_))));
        e.create_topic_with("short", 1, retention(10_000)).unwrap();
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
    fn a_topics_message_type_refuses_other_kinds_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path().join("store"))).unwrap();
            Engine::open(Arc::new(store), dir.path().join("config"), "b0", Arc::new(wasmq_store::SystemClock)).unwrap()
        };
        let e = open();
        let fifo = TopicOptions { message_type: MessageType::Fifo, ..TopicOptions::default() };
        e.create_topic_with("orders", 1, fifo).unwrap();
        e.create_topic("any", 1).unwrap();
        assert!(e.check_message_type("orders", MessageType::Fifo).is_ok());
        let refused = e.check_message_type("orders", MessageType::Normal).unwrap_err();
        assert!(matches!(refused, TopicError::WrongMessageType { accepts: MessageType::Fifo, sent: MessageType::Normal, .. }));
        assert!(refused.to_string().contains("topic orders takes FIFO messages, not NORMAL"), "{refused}");
        for t in MessageType::ALL {
            assert!(e.check_message_type("any", t).is_ok(), "a topic without a type takes {t}");
        }
        assert_eq!(e.set_topic_message_type("any", MessageType::Delay).unwrap().message_type, MessageType::Delay);
        assert!(matches!(e.set_topic_message_type("none", MessageType::Delay), Err(TopicError::Unknown(_))));
        assert!(matches!(e.set_topic_message_type("%DLQ%g", MessageType::Delay), Err(TopicError::Reserved)));
        drop(e);
        let e = open();
        assert_eq!(e.topic("orders").unwrap().message_type, MessageType::Fifo);
        assert!(e.check_message_type("any", MessageType::Normal).is_err(), "the change was saved");
    }

    #[test]
    fn group_settings_are_kept_across_a_restart_and_go_with_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path().join("store"))).unwrap();
            Engine::open(Arc::new(store), dir.path().join("config"), "b0", Arc::new(wasmq_store::SystemClock)).unwrap()
        };
        let e = open();
        assert!(!e.group_settings("g").fifo, "FIFO is off unless set");
        e.set_group_settings("g", GroupSettings { fifo: true }).unwrap();
        assert!(e.groups().contains(&"g".to_owned()), "setting a group's settings creates it");
        assert!(matches!(e.set_group_settings("bad name", GroupSettings { fifo: true }), Err(EngineError::Invalid(_))));
        drop(e);
        let e = open();
        assert!(e.group_settings("g").fifo, "kept in groups.json");
        e.delete_group("g").unwrap();
        assert!(!e.group_settings("g").fifo && !e.groups().contains(&"g".to_owned()));
        drop(e);
        assert!(!open().group_settings("g").fifo, "the deletion was saved");
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
            assert_eq!(e.held_until(&retry, q, offset), Some(due_ms), "a long poll sleeps until exactly then");
            assert_eq!(e.held_until("jobs", 0, 0), None, "only retry queues hold messages");
            clock.set_ms(due_ms);
            assert_eq!(e.held_until(&retry, q, offset), None, "due now: nothing to wait for");
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
