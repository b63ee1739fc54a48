//! The one place where the service's errors become the native protocol's error codes, and
//! where protocol messages become store messages and back.

use bytes::Bytes;
use wasmq_protocol::{ErrorCode, Message, PulledMessage, ReadFrom, SendStatus};
use wasmq_service::{self as service, Guarantee, ServiceError};
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

fn append_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::Message { source: wasmq_store::MessageError::MessageTooLarge { .. }, .. } => ErrorCode::MessageTooLarge,
        AppendError::Message { source: wasmq_store::MessageError::InvalidTopic { .. }, .. } => ErrorCode::InvalidTopic,
        AppendError::EmptyBatch | AppendError::Message { .. } => ErrorCode::InvalidMessage,
        AppendError::TooManyMessages { .. } | AppendError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        AppendError::DiskFull { .. } => ErrorCode::DiskFull,
        AppendError::Failed { .. } => ErrorCode::StoreFailed,
        AppendError::Closed => ErrorCode::ShuttingDown,
        AppendError::Io { .. } => ErrorCode::Internal,
    }
}

fn read_code(e: &ReadError) -> ErrorCode {
    match e {
        ReadError::Trimmed { .. } => ErrorCode::OffsetTrimmed,
        ReadError::Corrupt { .. } => ErrorCode::Corrupt,
        ReadError::BeyondEnd { .. } | ReadError::NotARecord { .. } => ErrorCode::Internal,
    }
}

/// The wire code of a service error; the text goes as it is.
pub fn service_error(e: &ServiceError) -> WireError {
    let code = match e {
        ServiceError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        ServiceError::InvalidQueue(_) => ErrorCode::InvalidQueue,
        ServiceError::InvalidTopic(_) => ErrorCode::InvalidTopic,
        ServiceError::Invalid(_) | ServiceError::InvalidReceipt(_) => ErrorCode::InvalidRequest,
        ServiceError::WrongMessageType(_) => ErrorCode::InvalidMessage,
        ServiceError::NotFound(_) => ErrorCode::InvalidRequest,
        ServiceError::NotMaster(_) => ErrorCode::NotMaster,
        ServiceError::PluginRejected(_) => ErrorCode::PluginRejected,
        ServiceError::PluginFailed(_) => ErrorCode::PluginFailed,
        ServiceError::Fenced(_) => ErrorCode::Fenced,
        ServiceError::FlushTimeout(_) => ErrorCode::FlushTimeout,
        ServiceError::Append(a) => append_code(a),
        ServiceError::Read(r) => read_code(r),
        ServiceError::OffsetTrimmed(_) => ErrorCode::OffsetTrimmed,
        ServiceError::StoreFailed(_) => ErrorCode::StoreFailed,
        ServiceError::ShuttingDown(_) => ErrorCode::ShuttingDown,
        ServiceError::Internal(_) => ErrorCode::Internal,
        ServiceError::Denied(_) => ErrorCode::NotAuthorized,
    };
    WireError::new(code, e.to_string())
}

impl From<ServiceError> for WireError {
    fn from(e: ServiceError) -> Self {
        service_error(&e)
    }
}

/// A send's guarantee as the wire's status.
#[must_use]
pub fn send_status(g: Guarantee) -> SendStatus {
    match g {
        Guarantee::Ok => SendStatus::Ok,
        Guarantee::SlaveTimeout => SendStatus::FlushSlaveTimeout,
        Guarantee::SlaveNotAvailable => SendStatus::SlaveNotAvailable,
    }
}

/// Where to read next, as the wire says it.
#[must_use]
pub fn read_from(r: service::ReadFrom) -> ReadFrom {
    match r {
        service::ReadFrom::Here => ReadFrom::Here,
        service::ReadFrom::Slave => ReadFrom::Slave,
        service::ReadFrom::Master => ReadFrom::Master,
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
