//! The store's configuration: plain values with defaults, checked once by [`StoreConfig::validate`]
//! when the store opens. A bad value is an error naming its key; nothing is clamped silently.

use std::path::PathBuf;
use std::time::Duration;

use crate::record::{FILLER_BYTES_MIN, RECORD_OVERHEAD_MAX};

/// Largest segment size: offsets within a segment must fit the 32-bit record length field's
/// companions, and a mapping this large is already unwieldy.
pub const SEGMENT_BYTES_MAX: u64 = 16 << 30;
/// Smallest segment size (tests use it so roll-over happens often).
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Default bytes of flushed log kept in the page cache behind the write position.
const CACHED_BYTES_BEHIND_DEFAULT: u64 = 2 << 30;
/// Default commit-log segment size, as RocketMQ.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Default largest message body, as RocketMQ's `maxMessageSize`.
pub const MESSAGE_BYTES_MAX_DEFAULT: u32 = 4 << 20;
/// Hard ceiling for the configurable message size.
pub const MESSAGE_BYTES_LIMIT: u32 = 64 << 20;
/// Most messages in one appended batch.
pub const BATCH_MESSAGES_MAX: usize = 4096;
/// Default number of 20-byte entries per consume-queue file (6 MB files, as RocketMQ).
pub const CQ_ENTRIES_PER_FILE_DEFAULT: u32 = 300_000;
/// Default hash slots per index file (4 MiB of slots).
pub const INDEX_SLOTS_DEFAULT: u32 = 1 << 20;
/// Default entries per index file (80 MB of entries).
pub const INDEX_ENTRIES_PER_FILE_DEFAULT: u32 = 4 << 20;

/// When an append's bytes must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// An append is durable only once fsynced; concurrent appends share one fsync (group
    /// commit). Waiting longer than `timeout` gives [`crate::FlushError::Timeout`].
    Sync { timeout: Duration },
    /// The log is fsynced every `interval` by a thread in the idle scheduling class (it
    /// yields to appends and reads; on a machine saturated for long the kernel's own writeback
    /// takes over); a process crash loses nothing (the page cache survives it), a power loss
    /// may lose up to one interval, or more while the machine has no idle CPU.
    Async { interval: Duration },
}

/// Configuration of one store. Build with [`StoreConfig::new`] and set fields.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding `commitlog/`, `consumequeue/`, `index/`, `checkpoint`, `abort`, `lock`.
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub message_bytes_max: u32,
    pub cq_entries_per_file: u32,
    pub index_slots: u32,
    pub index_entries_per_file: u32,
    pub flush: FlushMode,
    /// How often consume queues and index are flushed and the checkpoint written.
    pub checkpoint_interval: Duration,
    /// Segments whose newest message is older than this are deleted.
    pub retention: Duration,
    /// Above this used-space ratio of the file system, the oldest segments are deleted even if
    /// they are younger than `retention`.
    pub retention_disk_ratio_max: f64,
    /// How often the retention check runs.
    pub retention_check_interval: Duration,
    /// Fault the next segment's pages in on a background thread before it becomes active. Off
    /// by default: appends write through the file, which fills whole pages without zeroing
    /// them first, so pre-touching would only spend CPU (zeroing pages the writer overwrites)
    /// that a machine shared with clients does not have to spare; on one with idle cores it can
    /// still take page allocation off the writer's path.
    pub pretouch_segments: bool,
    /// How many bytes of the flushed log behind the write position stay in the page cache;
    /// older pages are dropped, in steps of 16 MiB, so that the next appends reuse them while
    /// they are warm (`None`: leave it all to the kernel).
    pub cached_bytes_behind: Option<u64>,
    /// Cut the log at this offset while opening (a record boundary at or below its end): what
    /// follows is removed — records, consume-queue entries, index entries, epochs begun there
    /// or later. A broker rejoining a new master cuts what that master never had
    /// ([`crate::diverge_at`]). Past the log's end: nothing is cut.
    pub cut_log_at: Option<u64>,
}

impl StoreConfig {
    /// Defaults: 1 GiB segments, 4 MiB messages, async flush every 500 ms, checkpoint every
    /// second, 72 h retention, deletion above 75 % disk use, 2 GiB of flushed log kept cached.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            cq_entries_per_file: CQ_ENTRIES_PER_FILE_DEFAULT,
            index_slots: INDEX_SLOTS_DEFAULT,
            index_entries_per_file: INDEX_ENTRIES_PER_FILE_DEFAULT,
            flush: FlushMode::Async { interval: Duration::from_millis(500) },
            checkpoint_interval: Duration::from_secs(1),
            retention: Duration::from_secs(72 * 3600),
            retention_disk_ratio_max: 0.75,
            retention_check_interval: Duration::from_secs(10),
            pretouch_segments: false,
            cached_bytes_behind: Some(CACHED_BYTES_BEHIND_DEFAULT),
            cut_log_at: None,
        }
    }

    /// A configuration for tests: 1 MiB segments, small queue and index files, 256 KiB messages.
    pub fn small_for_tests(dir: impl Into<PathBuf>) -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES_MIN,
            message_bytes_max: 256 << 10,
            cq_entries_per_file: 64,
            index_slots: 64,
            index_entries_per_file: 256,
            pretouch_segments: false,
            ..Self::new(dir)
        }
    }

    /// # Errors
    /// The first field whose value is out of range, by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, reason: String| Err(ConfigError { key, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return err("segment_bytes", format!("{} not in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}", self.segment_bytes));
        }
        if !self.segment_bytes.is_multiple_of(4096) {
            return err("segment_bytes", format!("{} is not a multiple of 4096", self.segment_bytes));
        }
        if self.message_bytes_max == 0 || self.message_bytes_max > MESSAGE_BYTES_LIMIT {
            return err("message_bytes_max", format!("{} not in 1..={MESSAGE_BYTES_LIMIT}", self.message_bytes_max));
        }
        let record_max = u64::from(self.message_bytes_max) + RECORD_OVERHEAD_MAX as u64 + FILLER_BYTES_MIN as u64;
        if record_max > self.segment_bytes {
            return err(
                "message_bytes_max",
                format!("a {}-byte message with headers does not fit a {}-byte segment", self.message_bytes_max, self.segment_bytes),
            );
        }
        if self.cq_entries_per_file < 2 {
            return err("cq_entries_per_file", format!("{} < 2", self.cq_entries_per_file));
        }
        if self.index_slots == 0 || self.index_entries_per_file < 2 || self.index_entries_per_file >= u32::MAX / 2 {
            return err("index_slots/index_entries_per_file", "must be > 0 and >= 2 respectively, entries < 2^31".into());
        }
        match self.flush {
            FlushMode::Sync { timeout } if timeout.is_zero() => return err("flush.timeout", "must be > 0".into()),
            FlushMode::Async { interval } if interval.is_zero() => return err("flush.interval", "must be > 0".into()),
            _ => {}
        }
        if self.checkpoint_interval.is_zero() {
            return err("checkpoint_interval", "must be > 0".into());
        }
        if self.retention_check_interval.is_zero() {
            return err("retention_check_interval", "must be > 0".into());
        }
        if !(self.retention_disk_ratio_max > 0.0 && self.retention_disk_ratio_max <= 1.0) {
            return err("retention_disk_ratio_max", format!("{} not in (0, 1]", self.retention_disk_ratio_max));
        }
        Ok(())
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store config `{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}
