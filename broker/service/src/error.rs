//! The service's errors: what went wrong, in the broker's terms. Each front end maps them to its
//! wire codes in one file.

use wasmq_engine::{EngineError, GroupCommitError, PlacementError, PullError, SendError};
use wasmq_store::{AppendError, ReadError};

/// Why a use case failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidQueue(String),
    /// A topic name the request may not use (the broker's own, `%…`).
    #[error("{0}")]
    InvalidTopic(String),
    /// A request that makes no sense (bad names, a bad filter, a state it does not fit).
    #[error("{0}")]
    Invalid(String),
    /// This broker is a slave; the text names its master.
    #[error("{0}")]
    NotMaster(String),
    /// A routing plugin refused a message; nothing of the batch was stored.
    #[error("{0}")]
    PluginRejected(String),
    /// A fail-closed plugin failed; nothing of the batch was stored.
    #[error("{0}")]
    PluginFailed(String),
    /// What the request names is not there (a scheduled message delivered or recalled already).
    #[error("{0}")]
    NotFound(String),
    /// A send whose kind of message (normal, FIFO, delay, transaction) the topic does not take.
    #[error("{0}")]
    WrongMessageType(String),
    /// A receipt handle that is malformed, or no longer in flight for the group (acknowledged,
    /// visible again, or another group's).
    #[error("{0}")]
    InvalidReceipt(String),
    /// A group commit from an older generation (the member lost the queue).
    #[error("{0}")]
    Fenced(String),
    /// Stored, but not flushed within the flush timeout.
    #[error("{0}")]
    FlushTimeout(String),
    /// The store refused an append (its kind says why: full disk, too large, stopped store…).
    #[error("{0}")]
    Append(AppendError),
    /// A read failed (trimmed by retention, corrupt).
    #[error("{0}")]
    Read(ReadError),
    /// What was asked for is below the retained range (retention deleted it).
    #[error("{0}")]
    OffsetTrimmed(String),
    /// The store failed (a failed fsync): it takes no more writes.
    #[error("{0}")]
    StoreFailed(String),
    #[error("{0}")]
    ShuttingDown(String),
    /// The policies do not allow the request: "not authorized: user U may not ACTION on RESOURCE".
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Internal(String),
}

impl From<AppendError> for ServiceError {
    fn from(e: AppendError) -> Self {
        Self::Append(e)
    }
}

impl From<ReadError> for ServiceError {
    fn from(e: ReadError) -> Self {
        Self::Read(e)
    }
}

impl From<wasmq_engine::RecallError> for ServiceError {
    fn from(e: wasmq_engine::RecallError) -> Self {
        use wasmq_engine::RecallError as R;
        match e {
            R::Malformed(m) => Self::Invalid(m),
            R::NotWaiting(m) => Self::NotFound(m),
            R::Failed(m) => Self::Internal(m),
        }
    }
}

impl From<SendError> for ServiceError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::UnknownTopic(topic) => crate::unknown_topic(&topic),
            SendError::InvalidQueue { .. } => Self::InvalidQueue(e.to_string()),
            SendError::Invalid(_) => Self::Invalid(e.to_string()),
            SendError::ReadOnly(why) => Self::NotMaster(why),
            SendError::Append(a) => a.into(),
        }
    }
}

impl From<PullError> for ServiceError {
    fn from(e: PullError) -> Self {
        match e {
            PullError::UnknownTopic(topic) => crate::unknown_topic(&topic),
            PullError::InvalidQueue { .. } => Self::InvalidQueue(e.to_string()),
            PullError::Read(r) => r.into(),
            PullError::Filter(_) => Self::Invalid(e.to_string()),
        }
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(_) => Self::Invalid(e.to_string()),
            EngineError::Append(a) => a.into(),
            EngineError::ReadOnly(why) => Self::NotMaster(why),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<wasmq_engine::ReceiptError> for ServiceError {
    fn from(e: wasmq_engine::ReceiptError) -> Self {
        Self::InvalidReceipt(e.to_string())
    }
}

impl From<GroupCommitError> for ServiceError {
    fn from(e: GroupCommitError) -> Self {
        match e {
            GroupCommitError::Fenced(_) => Self::Fenced(e.to_string()),
            GroupCommitError::Engine(inner) => inner.into(),
        }
    }
}

impl From<PlacementError> for ServiceError {
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::Rejected { .. } => Self::PluginRejected(e.to_string()),
            PlacementError::Failed { .. } => Self::PluginFailed(e.to_string()),
        }
    }
}
