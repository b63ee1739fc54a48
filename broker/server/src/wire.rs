//! The one place where engine and store errors become wire error codes, and where protocol
//! messages become store messages and back.

use bytes::Bytes;
use wasmq_engine::{EngineError, PullError, SendError, TopicError};
use wasmq_protocol::{ErrorCode, Message, PulledMessage};
use wasmq_store::{AppendError, NewMessage, Properties, ReadError, StoredMessage};

/// An error answer: a code and a text for people.
#[derive(Debug, Clone)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

pub fn append_error(e: &AppendError) -> WireError {
    let code = match e {
        AppendError::EmptyBatch | AppendError::Message { .. } => match e {
            AppendError::Message { source: wasmq_store::MessageError::MessageTooLarge { .. }, .. } => ErrorCode::MessageTooLarge,
            AppendError::Message { source: wasmq_store::MessageError::InvalidTopic { .. }, .. } => ErrorCode::InvalidTopic,
            _ => ErrorCode::InvalidMessage,
        },
        AppendError::TooManyMessages { .. } | AppendError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        AppendError::DiskFull { .. } => ErrorCode::DiskFull,
        AppendError::Failed { .. } => ErrorCode::StoreFailed,
        AppendError::Closed => ErrorCode::ShuttingDown,
        AppendError::Io { .. } => ErrorCode::Internal,
    };
    WireError::new(code, e.to_string())
}

pub fn read_error(e: &ReadError) -> WireError {
    let code = match e {
        ReadError::Trimmed { .. } => ErrorCode::OffsetTrimmed,
        ReadError::Corrupt { .. } => ErrorCode::Corrupt,
        ReadError::BeyondEnd { .. } | ReadError::NotARecord { .. } => ErrorCode::Internal,
    };
    WireError::new(code, e.to_string())
}

pub fn send_error(e: &SendError) -> WireError {
    match e {
        SendError::UnknownTopic(_) => WireError::new(ErrorCode::UnknownTopic, e.to_string()),
        SendError::InvalidQueue { .. } => WireError::new(ErrorCode::InvalidQueue, e.to_string()),
        SendError::Invalid(_) => WireError::new(ErrorCode::InvalidRequest, e.to_string()),
        SendError::ReadOnly(_) => WireError::new(ErrorCode::NotMaster, e.to_string()),
        SendError::Append(a) => append_error(a),
    }
}

pub fn pull_error(e: &PullError) -> WireError {
    match e {
        PullError::UnknownTopic(_) => WireError::new(ErrorCode::UnknownTopic, e.to_string()),
        PullError::InvalidQueue { .. } => WireError::new(ErrorCode::InvalidQueue, e.to_string()),
        PullError::Read(r) => read_error(r),
        PullError::Filter(_) => WireError::new(ErrorCode::InvalidRequest, e.to_string()),
    }
}

pub fn group_commit_error(e: &wasmq_engine::GroupCommitError) -> WireError {
    match e {
        wasmq_engine::GroupCommitError::Fenced(_) => WireError::new(ErrorCode::Fenced, e.to_string()),
        wasmq_engine::GroupCommitError::Engine(inner) => engine_error(inner),
    }
}

pub fn engine_error(e: &EngineError) -> WireError {
    match e {
        EngineError::Invalid(_) => WireError::new(ErrorCode::InvalidRequest, e.to_string()),
        EngineError::Append(a) => append_error(a),
        EngineError::ReadOnly(_) => WireError::new(ErrorCode::NotMaster, e.to_string()),
        _ => WireError::new(ErrorCode::Internal, e.to_string()),
    }
}

/// HTTP status for a topic error (admin API).
pub fn topic_status(e: &TopicError) -> u16 {
    match e {
        TopicError::Exists(_) => 409,
        TopicError::Unknown(_) => 404,
        TopicError::Invalid(_) | TopicError::BadQueueCount { .. } | TopicError::Reserved => 400,
        TopicError::TooMany => 507,
        TopicError::ReadOnly(_) => 409,
        TopicError::Io(_) => 500,
    }
}

/// A producer's message as the store records it.
pub fn to_store(m: Message) -> NewMessage {
    NewMessage {
        topic: String::new(),
        queue_id: 0,
        born_ms: m.born_ms,
        flags: m.flags,
        properties: Properties {
            tags: m.tags,
            keys: m.keys,
            unique_id: (!m.unique_id.is_empty()).then_some(m.unique_id),
            ordering_key: m.ordering_key,
            delivery_ms: (m.delivery_ms > 0).then_some(m.delivery_ms),
            transaction: None,
            reconsume_times: 0,
            user: m.properties,
        },
        body: m.body,
    }
}

/// A stored message as a consumer receives it (the body stays a view of the log).
pub fn from_store(m: StoredMessage) -> PulledMessage {
    let p = m.properties;
    PulledMessage {
        queue_offset: m.queue_offset,
        log_offset: m.log_offset,
        store_ms: m.store_ms,
        reconsume_times: p.reconsume_times,
        message: Message {
            unique_id: p.unique_id.unwrap_or_default(),
            tags: p.tags,
            keys: p.keys,
            ordering_key: p.ordering_key,
            delivery_ms: p.delivery_ms.unwrap_or(0),
            born_ms: m.born_ms,
            flags: m.flags,
            properties: p.user,
            body: m.body,
        },
    }
}

/// The body of an error response.
pub fn error_body(e: &WireError) -> Bytes {
    Bytes::copy_from_slice(e.message.as_bytes())
}
