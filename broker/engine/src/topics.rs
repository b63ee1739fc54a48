//! The topic registry: name → queue count, persisted as `topics.json` (replaced atomically).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Most queues one topic may have on one broker.
pub const QUEUES_PER_TOPIC_MAX: u32 = 1024;
/// Most topics one broker holds.
pub const TOPICS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub queues: u32,
    pub created_ms: u64,
    /// The topic's own retention, shorter than the log's: older messages become unreadable
    /// (the log keeps their bytes until its own retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Which kind of message the topic takes (RocketMQ 5's topic message type).
    #[serde(default, skip_serializing_if = "MessageType::is_mixed")]
    pub message_type: MessageType,
}

/// The kind of message a send carries and a topic accepts, as RocketMQ 5 names them. A topic
/// of one kind refuses sends of another; `Mixed` (a topic created without a type) takes all.
/// The admin API's `TopicMessageType` is its form for tools (which parse names there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MessageType {
    Normal,
    /// Ordered within a message group (an ordering key).
    Fifo,
    /// Delivered at a time: a delay level or a delivery timestamp.
    Delay,
    /// A transaction's half message until committed.
    Transaction,
    #[default]
    Mixed,
}

impl MessageType {
    pub const ALL: [Self; 5] = [Self::Normal, Self::Fifo, Self::Delay, Self::Transaction, Self::Mixed];

    #[must_use]
    pub fn is_mixed(&self) -> bool {
        *self == Self::Mixed
    }

    /// Whether a topic of this type takes a message of type `sent`.
    #[must_use]
    pub fn accepts(self, sent: Self) -> bool {
        self == Self::Mixed || self == sent
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Fifo => "FIFO",
            Self::Delay => "DELAY",
            Self::Transaction => "TRANSACTION",
            Self::Mixed => "MIXED",
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new topic's settings beyond its queue count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicOptions {
    pub retention_ms: Option<u64>,
    pub message_type: MessageType,
}

/// A topic with each queue's readable offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStatus {
    pub name: String,
    pub queues: Vec<QueueStatus>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0} exists already")]
    Exists(String),
    #[error("topic {0} does not exist")]
    Unknown(String),
    #[error("invalid topic name: {0}")]
    Invalid(String),
    #[error("{queues} queues: a topic has 1..={QUEUES_PER_TOPIC_MAX}")]
    BadQueueCount { queues: u32 },
    #[error("this broker holds the maximum of {TOPICS_MAX} topics")]
    TooMany,
    #[error("names starting with % are reserved for the broker's own topics")]
    Reserved,
    /// This broker is a slave: topics are created and deleted on its master.
    #[error("{0}")]
    ReadOnly(String),
    /// A send of one message type to a topic of another.
    #[error("topic {topic} takes {accepts} messages, not {sent}: send {accepts} messages to it, or use a topic of type {sent} or MIXED")]
    WrongMessageType { topic: String, accepts: MessageType, sent: MessageType },
    #[error("saving the topic registry: {0}")]
    Io(#[from] io::Error),
}

/// Group names follow topic names' rules (they become file and topic name parts).
///
/// # Errors
/// What is wrong with the name.
pub fn validate_group(group: &str) -> Result<(), String> {
    wasmq_store::validate_topic(group).map_err(|e| e.to_string())
}

pub(crate) fn load(path: &Path) -> io::Result<BTreeMap<String, TopicConfig>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Writes `value` as JSON to `path` atomically: temporary file, fsync, rename, fsync directory.
pub(crate) fn save_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
