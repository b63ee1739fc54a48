//! wasmq's storage engine.
//!
//! Knows bytes, offsets and queues: one append-only commit log for every topic, split into
//! fixed-size preallocated segment files written through `mmap`; per (topic, queue) consume
//! queues indexing it; a hash index by message id and key; sync (group commit) or async flush;
//! crash recovery that verifies the log by CRC past the checkpoint and cuts a torn tail; and
//! retention by age and disk usage.
//!
//! Knows nothing of the network, the wire protocol, async runtimes, consumer groups or topic
//! configuration: the broker's engine decides which queue a message goes to and who reads it.
//! The on-disk format is documented in `docs/storage-format.md`.

mod checkpoint;
mod clock;
mod config;
mod consume_queue;
mod epochs;
mod error;
mod index;
mod journal;
mod mmap;
mod record;
mod store;

pub use clock::{Clock, DiskProbe, DiskSpace, ManualClock, StatvfsProbe, SystemClock, disk_space};
pub use config::{
    BATCH_MESSAGES_MAX, CQ_ENTRIES_PER_FILE_DEFAULT, ConfigError, FlushMode, INDEX_ENTRIES_PER_FILE_DEFAULT, INDEX_SLOTS_DEFAULT,
    MESSAGE_BYTES_LIMIT, MESSAGE_BYTES_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, StoreConfig,
};
pub use consume_queue::{CQ_ENTRY_BYTES, CqEntry};
pub use epochs::{EPOCHS_MAX, EpochStart, Epochs, diverge_at};
pub use error::{AppendError, FlushError, OpenError, ReadError, ReplicaError};
pub use journal::JOURNAL_ENV;
pub use record::{
    MessageError, NewMessage, PROPERTIES_BYTES_MAX, PROPERTIES_COUNT_MAX, Properties, QUEUE_ID_LIMIT, RECORD_OVERHEAD_MAX, RecordError,
    StoredMessage, TOPIC_BYTES_MAX, TransactionState, tag_hash, validate_topic,
};
pub use store::{
    AppendDurableError, Appended, AppendedMessage, QueueInfo, QueueRead, RawChunk, RecoveryReport, RetentionReport, Store, VerifyReport,
};
