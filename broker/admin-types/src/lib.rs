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
