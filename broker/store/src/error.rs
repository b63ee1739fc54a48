//! Errors, one type per operation. Each says what happened and where.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::record::{MessageError, RecordError};

/// Opening (and recovering) a store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store directory {dir} is in use by another process")]
    Locked { dir: PathBuf },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("commit log segment {path} is {n_bytes} bytes, the configuration says {expected}")]
    SegmentSize { path: PathBuf, n_bytes: u64, expected: u64 },
    #[error("commit log segments are not contiguous: {missing_at} is missing")]
    SegmentGap { missing_at: u64 },
    /// A record below the checkpointed (durable) offset is damaged. The store refuses to open
    /// rather than cut acknowledged messages off; repair from a replica or move the segment away.
    #[error("corrupt record at log offset {offset} inside the checkpointed region (durable up to {durable}): {reason}")]
    CorruptCommitted { offset: u64, durable: u64, reason: String },
    /// The log was to be cut at an offset inside a record (or its segment's filler).
    #[error("cannot cut the commit log at {at}: the record at {record} runs past it (cut at a record boundary)")]
    CutInsideRecord { at: u64, record: u64 },
    /// The epochs file is unreadable.
    #[error("epochs file {path}: {reason}")]
    Epochs { path: PathBuf, reason: String },
}

/// Appending messages failed; nothing of the batch was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("empty batch")]
    EmptyBatch,
    #[error("batch of {n_messages} messages exceeds the limit of {max}")]
    TooManyMessages { n_messages: usize, max: usize },
    #[error("batch of {n_bytes} bytes does not fit a {max}-byte segment")]
    BatchTooLarge { n_bytes: u64, max: u64 },
    #[error("message {index} of the batch: {source}")]
    Message { index: usize, source: MessageError },
    /// No space for a new segment, consume-queue or index file (they are preallocated, so a
    /// full disk shows here and never as a SIGBUS on a mapped page).
    #[error("disk full: cannot allocate {what}")]
    DiskFull { what: String },
    #[error("{op}: {reason}")]
    Io { op: &'static str, reason: Arc<str> },
    /// A flush failed earlier; the store accepts no more writes (see `Store::failure`).
    #[error("store stopped accepting writes: {reason}")]
    Failed { reason: Arc<str> },
    #[error("store is closed")]
    Closed,
}

/// Waiting for durability failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The bytes were written but not yet fsynced within the timeout (RocketMQ's
    /// FLUSH_DISK_TIMEOUT): stored, durability unknown.
    #[error("not flushed within the timeout (log offset {end_offset})")]
    Timeout { end_offset: u64 },
    #[error("flush failed: {reason}")]
    Failed { reason: Arc<str> },
    #[error("store closed before the flush")]
    Closed,
}

/// Reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("offset {requested} was deleted by retention; the lowest is {min}")]
    Trimmed { requested: u64, min: u64 },
    #[error("log offset {requested} is at or past the end {end}")]
    BeyondEnd { requested: u64, end: u64 },
    #[error("log offset {offset} is not the start of a message")]
    NotARecord { offset: u64 },
    /// A stored record failed its checks: a disk fault or a bug. Reported, never skipped.
    #[error("corrupt record at log offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: RecordError },
}

/// Appending replicated records on a slave failed; nothing was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaError {
    #[error("replicated bytes start at {got}, the log ends at {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("replicated record at log offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error(transparent)]
    Append(#[from] AppendError),
}
