//! The admin API's JSON bodies (`/api/v1`). Plain serde types with no I/O, so the broker, the
//! client, the CLI and the (wasm) console share one definition.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/broker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub broker_name: String,
    pub version: String,
    pub listen: String,
    pub admin_listen: String,
    /// `sync` or `async`.
    pub flush: String,
    pub log_min_offset: u64,
    pub log_end_offset: u64,
    pub log_durable_offset: u64,
    pub store_failure: Option<String>,
    pub topics: usize,
}

/// An item of `GET /api/v1/topics`; also the answer to a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub queues: u32,
    pub created_ms: u64,
}

/// `POST /api/v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    pub queues: u32,
}

/// `GET /api/v1/topics/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDetail {
    pub name: String,
    pub created_ms: u64,
    pub queues: Vec<QueueOffsets>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffsets {
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// An item of `GET /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    /// `clustering`, `broadcasting`, or `none` when no member is connected.
    pub mode: String,
    pub members: usize,
}

/// `GET /api/v1/groups/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDetail {
    pub name: String,
    pub mode: String,
    pub generation: u64,
    pub members: Vec<GroupMember>,
    /// One per (topic, queue) the group has committed for or is assigned.
    pub queues: Vec<GroupQueue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub client_id: String,
    /// `topic/queue` items assigned to the member.
    pub queues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupQueue {
    pub topic: String,
    pub queue_id: u32,
    pub committed: Option<u64>,
    pub max_offset: u64,
    /// Messages not yet committed.
    pub lag: u64,
    /// Age in ms of the oldest message not yet committed (0 without lag).
    pub lag_ms: u64,
    pub owner: Option<String>,
}

/// `POST /api/v1/groups/{name}/reset-offset`: move the group's offsets of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffset {
    pub topic: String,
    /// `earliest`, `latest`, or a timestamp in ms since the epoch (the first message stored at
    /// or after it).
    pub to: String,
}

/// An item of `GET /api/v1/groups/{name}/dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub queue_offset: u64,
    pub message_id: String,
    pub origin_topic: String,
    pub reconsume_times: u32,
    pub store_ms: u64,
    /// The body as text (lossy), at most 256 bytes of it.
    pub body_preview: String,
}

/// `POST /api/v1/groups/{name}/dlq/resend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resend {
    pub queue_offset: u64,
}

/// The answer to a resend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resent {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}
