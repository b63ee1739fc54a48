//! The store: one commit log, the consume queues and index built from it, the flusher, the
//! segment allocator and retention.
//!
//! Concurrency: appends take the writer lock, encode records straight into the active mapped
//! segment, write consume-queue and index entries, then publish the new end offset. Readers never
//! lock the log: they read only below the published end, which is never rewritten while the
//! store is open. Consume queues and the index sit behind their own mutexes, held briefly.
//! Lock order: writer → topics → index → one consume queue; the flush, allocator and stop
//! locks are taken alone.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::clock::{Clock, DiskProbe, StatvfsProbe, SystemClock};
use crate::config::{FlushMode, StoreConfig};
use crate::consume_queue::{ConsumeQueue, CqEntry, PutError, file_name, parse_file_name};
use crate::epochs::Epochs;
use crate::error::{AppendError, FlushError, OpenError, ReadError, ReplicaError};
use crate::index::{Index, id_hash, key_hash};
use crate::mmap::{LogFile, sync_parent_dir};
use crate::record::{self, FILLER_BYTES_MIN, Frame, NewMessage, RECORD_OVERHEAD_MAX, RecordError, StoredMessage};

mod alloc;
mod append;
mod flush;
mod open;
mod read;
mod replica;
mod retention;

/// Most log segments one retention round deletes, so a round stays short.
const RETENTION_SEGMENTS_PER_ROUND_MAX: usize = 10;
/// How often the group-commit flusher looks for unflushed bytes appended without a waiter.
const SYNC_FLUSH_POLL: Duration = Duration::from_millis(10);
/// Longest the group-commit flusher waits for a group as large as the last one to gather.
/// Bigger groups mean fewer fsyncs, and on a busy machine each fsync costs CPU (write-back,
/// TLB shootdowns) that the appenders need; the wait ends as soon as the group is complete,
/// and a lone appender never waits (its group of one is complete at once).
const GROUP_GATHER_MAX: Duration = Duration::from_micros(500);
/// Largest encoding buffer the writer keeps between appends (a bigger one is freed).
const SCRATCH_KEEP_BYTES: usize = 4 << 20;
/// Pages are faulted in this much at a time, so a stop request is seen promptly.
const POPULATE_STEP_BYTES: u64 = 16 << 20;
/// Smallest range of the flushed log whose cached pages are dropped at once.
const DROP_BEHIND_STEP: u64 = 16 << 20;
/// Most bytes of the log one queue read (or a recovery or replication scan) maps in ahead.
const MAP_IN_BYTES_MAX: u64 = 16 << 20;
/// A recovery scan maps in its next span when it gets this close to the end of the last one.
const SCAN_MAP_MARGIN_BYTES: u64 = 1 << 20;
/// Most chain entries one index lookup follows (a bound on lookup cost under hash collisions).
const INDEX_CANDIDATES_MAX: usize = 10_000;

/// Where one appended message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedMessage {
    pub log_offset: u64,
    pub queue_offset: u64,
    pub record_bytes: u32,
    pub store_ms: u64,
}

/// The result of an append: each message's place, and the log offset the batch ends at (what
/// must be durable for the batch to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub messages: Vec<AppendedMessage>,
    pub end_offset: u64,
}

/// Messages read from a queue.
#[derive(Debug, Clone)]
pub struct QueueRead {
    pub messages: Vec<StoredMessage>,
    /// The queue offset to read from next.
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// A queue's bounds: readable offsets are `min..max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub topic: String,
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// Raw log bytes for replication: whole records (and possibly the filler ending a segment).
#[derive(Debug, Clone)]
pub struct RawChunk {
    pub start_offset: u64,
    pub bytes: Bytes,
}

/// What opening the store found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous run did not shut down cleanly.
    pub crashed: bool,
    /// Log offset the scan started from.
    pub scanned_from: u64,
    /// Records verified and re-dispatched to consume queues and index.
    pub records_recovered: u64,
    /// Where the log was cut (a torn or garbled tail past the durable offset), if it was.
    pub truncated_at: Option<u64>,
    /// Where the log was cut as asked (`StoreConfig::cut_log_at`), if it reached that far.
    pub cut_at: Option<u64>,
    /// The log's end after recovery.
    pub end_offset: u64,
    pub elapsed: Duration,
}

/// What a retention round deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub log_min_offset: u64,
    /// Deleted segments that readers still had mapped after this round: released by a later
    /// round, once the last reader is done.
    pub segments_held: usize,
}

/// What a full verification of the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub from_offset: u64,
    pub end_offset: u64,
}

type Waiter = Box<dyn FnOnce(Result<(), FlushError>) + Send>;

#[derive(Default)]
struct FlushState {
    /// Callbacks waiting for durability (async callers).
    waiters: Vec<(u64, Waiter)>,
    /// Threads parked in `wait_durable` until the log is durable up to their offset (one
    /// targeted wake each, no herd on a shared lock; cheaper than a callback and channel).
    parked: Vec<(u64, std::thread::Thread)>,
    /// The flusher is waiting for work and needs a wake-up.
    flusher_idle: bool,
    /// While the flusher gathers a group, the waiter that brings the number of waiters to
    /// this wakes it (0: not gathering).
    gather_target: usize,
    shutdown: bool,
}

struct Writer {
    /// A batch is encoded here (cache-hot, CRCs computed in place) and then streamed into the
    /// segment in one copy.
    scratch: Vec<u8>,
    active: Arc<LogFile>,
    active_base: u64,
    pos: u64,
    last_store_ms: u64,
    closed: bool,
}

#[derive(Default)]
struct Alloc {
    want: Option<u64>,
    busy: Option<u64>,
    ready: Option<(u64, Arc<LogFile>)>,
    stop: bool,
}

type QueueHandle = Arc<Mutex<ConsumeQueue>>;

struct Inner {
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    disk: Arc<dyn DiskProbe>,
    record_max: usize,
    writer: Mutex<Writer>,
    segments: RwLock<BTreeMap<u64, Arc<LogFile>>>,
    /// Segments retention deleted while readers still mapped them (a pull response on its way
    /// holds a view of its segment). Released by a later retention round once the list holds
    /// the last reference, so that releasing a deleted 1 GiB file — the kernel truncates it
    /// then, and on a file system mounted with `discard` waits for the discards — runs on the
    /// retention thread, not on the connection worker that happened to drop the last view.
    /// Bounded by the segments themselves: each deleted segment enters once, and only while a
    /// view of it is alive.
    retired: Mutex<Vec<Arc<LogFile>>>,
    /// Published end of the log: every byte below is a complete record or filler.
    end: AtomicU64,
    /// Lowest log offset still stored.
    min: AtomicU64,
    /// Log end whose consume-queue and index entries are all written.
    dispatched: AtomicU64,
    /// Log end known fsynced.
    flushed: AtomicU64,
    /// Segments below this have had their cached pages dropped.
    uncached_below: AtomicU64,
    failure: OnceLock<Arc<str>>,
    topics: RwLock<HashMap<Arc<str>, HashMap<u32, QueueHandle>>>,
    index: Mutex<Index>,
    flush: Mutex<FlushState>,
    /// Wakes the flusher.
    flush_cv: Condvar,
    alloc: Mutex<Alloc>,
    alloc_cv: Condvar,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    closed: AtomicBool,
    /// The flusher has done its final flush; nothing more will become durable.
    flush_finished: AtomicBool,
    /// Test hook: the next log fsync reports an I/O error.
    #[cfg(test)]
    fail_next_sync: AtomicBool,
    /// Removed topics → the log offset they were removed at.
    removed: Mutex<BTreeMap<String, u64>>,
    /// The master epochs of the log (`epochs`); changed under the writer lock.
    epochs: Mutex<Epochs>,
    /// Called with the new end after every append (replication wakes its waiting slaves).
    appended: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Called with how long each fsync of the log took (metrics).
    synced: OnceLock<Box<dyn Fn(Duration) + Send + Sync>>,
    _lock: File,
}

/// The storage engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.config.dir)
            .field("min_offset", &self.min_offset())
            .field("end_offset", &self.end_offset())
            .field("durable_offset", &self.durable_offset())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks is a bug; the state is still consistent enough
    // to keep serving reads, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io { op, path: path.to_owned(), source }
}

fn seg_base(offset: u64, seg: u64) -> u64 {
    offset / seg * seg
}

impl Store {
    /// Appends a batch: every message lands contiguously in one segment, or none does. Returns at
    /// once; under sync flush the batch is durable only after [`Store::wait_durable`] (or the
    /// callback of [`Store::on_durable`]) says so.
    ///
    /// # Errors
    /// See [`AppendError`]; on error nothing of the batch is stored.
    pub fn append(&self, batch: &[NewMessage]) -> Result<Appended, AppendError> {
        self.inner.append(batch)
    }

    /// Appends independent batches together, in order (a group append: concurrent senders'
    /// batches share one writer-lock section, one `pwrite` of the log and one of each consume
    /// queue). Each batch has its own result, as [`Store::append`] would give it: a batch that
    /// fails validation fails alone, and each lands contiguously in one segment or not at all.
    #[must_use]
    pub fn append_many(&self, batches: &[&[NewMessage]]) -> Vec<Result<Appended, AppendError>> {
        self.inner.append_many(batches)
    }

    /// Appends and, under sync flush, waits until the batch is durable.
    ///
    /// # Errors
    /// Append errors, or the flush failing or timing out (the batch is then stored but not
    /// known durable: [`FlushError::Timeout`]).
    pub fn append_durable(&self, batch: &[NewMessage]) -> Result<Appended, AppendDurableError> {
        let appended = self.append(batch).map_err(AppendDurableError::Append)?;
        if let FlushMode::Sync { timeout } = self.inner.config.flush {
            self.wait_durable(appended.end_offset, timeout).map_err(|e| AppendDurableError::Flush(e, appended.clone()))?;
        }
        Ok(appended)
    }

    /// Blocks until every byte below `end_offset` is fsynced, or `timeout` passes.
    ///
    /// # Errors
    /// [`FlushError`].
    pub fn wait_durable(&self, end_offset: u64, timeout: Duration) -> Result<(), FlushError> {
        self.inner.wait_durable(end_offset, timeout)
    }

    /// Calls `done` (on the flusher thread, or at once) when every byte below `end_offset` is
    /// fsynced, or with the error that prevents it. For async callers: send on a oneshot.
    pub fn on_durable(&self, end_offset: u64, done: impl FnOnce(Result<(), FlushError>) + Send + 'static) {
        self.inner.on_durable(end_offset, Box::new(done));
    }

    /// Reads the message starting at `log_offset`, verifying its CRC.
    ///
    /// # Errors
    /// [`ReadError`].
    pub fn read(&self, log_offset: u64) -> Result<StoredMessage, ReadError> {
        self.inner.read(log_offset)
    }

    /// Reads up to `max_count` messages of a queue from `from` whose records total at most
    /// `max_bytes` (at least one message is returned if any is there).
    ///
    /// # Errors
    /// [`ReadError::Trimmed`] if `from` was deleted by retention; corruption of a record.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max_count: usize, max_bytes: usize) -> Result<QueueRead, ReadError> {
        self.inner.read_queue(topic, queue_id, from, max_count, max_bytes)
    }

    /// Consume-queue entries of a queue from `from` (for tag filtering without touching the log).
    ///
    /// # Errors
    /// [`ReadError::Trimmed`] if `from` was deleted by retention.
    pub fn queue_entries(&self, topic: &str, queue_id: u32, from: u64, max_count: usize) -> Result<Vec<CqEntry>, ReadError> {
        let Some(cq) = self.inner.queue(topic, queue_id) else { return Ok(Vec::new()) };
        let cq = lock(&cq);
        if from < cq.min() {
            return Err(ReadError::Trimmed { requested: from, min: cq.min() });
        }
        let end = self.inner.end.load(Ordering::Acquire);
        Ok(cq.get(from, max_count).into_iter().take_while(|e| e.log_offset + u64::from(e.size) <= end).collect())
    }

    /// Whether the message at queue offset `offset` of a queue can be read (it exists and its
    /// append has been published), for long polls deciding whether to wait.
    pub fn is_readable(&self, topic: &str, queue_id: u32, offset: u64) -> bool {
        let Some(cq) = self.inner.queue(topic, queue_id) else { return false };
        let entry = {
            let cq = lock(&cq);
            if offset < cq.min() {
                return true; // trimmed: a read answers where the queue now begins
            }
            cq.entry(offset)
        };
        let end = self.inner.end.load(Ordering::Acquire);
        entry.is_some_and(|e| e.log_offset + u64::from(e.size) <= end)
    }

    /// `(min, max)` queue offsets of a queue; `(0, 0)` for a queue never written.
    pub fn queue_bounds(&self, topic: &str, queue_id: u32) -> (u64, u64) {
        self.inner
            .queue(topic, queue_id)
            .map(|cq| {
                let cq = lock(&cq);
                (cq.min(), cq.max())
            })
            .unwrap_or((0, 0))
    }

    /// Makes a queue's entries below queue offset `below` unreadable (a topic's own retention,
    /// shorter than the log's); returns the queue's new minimum. Not persisted beyond deleting
    /// whole index files: the caller cuts again after a restart.
    ///
    /// # Errors
    /// An index file that could not be deleted.
    pub fn trim_queue(&self, topic: &str, queue_id: u32, below: u64) -> io::Result<u64> {
        match self.inner.queue(topic, queue_id) {
            Some(cq) => {
                let mut cq = lock(&cq);
                cq.trim_below(below)?;
                Ok(cq.min())
            }
            None => Ok(0),
        }
    }

    /// Every queue that has ever been written, with its bounds.
    pub fn queues(&self) -> Vec<QueueInfo> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<QueueInfo> = topics
            .iter()
            .flat_map(|(t, qs)| {
                qs.iter().map(move |(&queue_id, cq)| {
                    let cq = lock(cq);
                    QueueInfo { topic: t.to_string(), queue_id, min_offset: cq.min(), max_offset: cq.max() }
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        out
    }

    /// Forgets a topic's consume queues (its records stay in the log until retention).
    ///
    /// # Errors
    /// Removing the queue directories failed.
    ///
    /// The log offset of the removal is recorded (`removed-topics`), so recovery never
    /// re-dispatches the removed topic's old records into a topic created later with the same
    /// name.
    pub fn remove_topic(&self, topic: &str) -> io::Result<()> {
        let w = lock(&self.inner.writer);
        let mut removed = lock(&self.inner.removed);
        removed.insert(topic.to_owned(), w.pos);
        let min = self.inner.min.load(Ordering::Acquire);
        removed.retain(|_, at| *at > min);
        save_removed(&self.inner.config.dir.join(REMOVED_TOPICS_FILE), &removed)?;
        drop(removed);
        let cq = self.inner.topics.write().unwrap_or_else(|e| e.into_inner()).remove(topic);
        if cq.is_some() {
            std::fs::remove_dir_all(self.inner.config.dir.join("consumequeue").join(topic))?;
        }
        Ok(())
    }

    /// The log's master epochs.
    pub fn epochs(&self) -> Epochs {
        lock(&self.inner.epochs).clone()
    }

    /// Begins master epoch `epoch` at the log's end (no append in between), durably; returns
    /// the offset it begins at.
    ///
    /// # Errors
    /// `epoch` not above the latest (`InvalidInput`); writing the file failed.
    pub fn begin_epoch(&self, epoch: u64) -> io::Result<u64> {
        let w = lock(&self.inner.writer);
        let mut epochs = lock(&self.inner.epochs);
        let mut next = epochs.clone();
        next.begin(epoch, w.pos).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        crate::journal::replace_file(&self.inner.config.dir.join(EPOCHS_FILE), next.encode().as_bytes())?;
        *epochs = next;
        Ok(w.pos)
    }

    /// A slave takes its master's epochs that begin at or below its log's end (durably, when
    /// any is new).
    ///
    /// # Errors
    /// The master's epochs contradict this log's (`InvalidData`: the logs diverged); writing
    /// the file failed.
    pub fn adopt_epochs(&self, master: &Epochs) -> io::Result<()> {
        let w = lock(&self.inner.writer);
        let mut epochs = lock(&self.inner.epochs);
        let mut next = epochs.clone();
        if next.adopt(master, w.pos).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            crate::journal::replace_file(&self.inner.config.dir.join(EPOCHS_FILE), next.encode().as_bytes())?;
            *epochs = next;
        }
        Ok(())
    }

    /// Finds a message by its unique id (newest first if the id repeats).
    ///
    /// # Errors
    /// Corruption of the record found.
    pub fn find_by_id(&self, unique_id: &str) -> Result<Option<StoredMessage>, ReadError> {
        let found = self.inner.lookup(id_hash(unique_id.as_bytes()), 1, |m| m.properties.unique_id.as_deref() == Some(unique_id))?;
        Ok(found.into_iter().next())
    }

    /// Finds up to `max` messages of `topic` with this unique id, newest first (a message and
    /// the broker's copies of it, as a committed transaction or a released scheduled message,
    /// share one id).
    ///
    /// # Errors
    /// Corruption of a record found.
    pub fn find_by_id_in(&self, unique_id: &str, topic: &str, max: usize) -> Result<Vec<StoredMessage>, ReadError> {
        self.inner.lookup(id_hash(unique_id.as_bytes()), max, |m| m.topic == topic && m.properties.unique_id.as_deref() == Some(unique_id))
    }

    /// Finds up to `max` messages of `topic` carrying `key`, newest first.
    ///
    /// # Errors
    /// Corruption of a record found.
    pub fn find_by_key(&self, topic: &str, key: &str, max: usize) -> Result<Vec<StoredMessage>, ReadError> {
        self.inner.lookup(key_hash(topic, key.as_bytes()), max, |m| m.topic == topic && m.properties.keys.iter().any(|k| k == key))
    }

    /// Raw log bytes from `from` (a record boundary) for a slave: whole records, at least one,
    /// then as many as fit `max_bytes`, never across a segment. Empty at the end of the log.
    ///
    /// # Errors
    /// [`ReadError::Trimmed`], or `from` not being a record boundary.
    pub fn read_raw(&self, from: u64, max_bytes: usize) -> Result<RawChunk, ReadError> {
        self.inner.read_raw(from, max_bytes)
    }

    /// On a slave: appends records read from the master's [`Store::read_raw`] at exactly
    /// `at`, verifying each one's CRC and offset, and builds consume queues and index from them.
    /// An empty store accepts any segment-aligned `at` (a slave starting from the master's
    /// oldest segment). Returns the new end offset.
    ///
    /// # Errors
    /// [`ReplicaError`]; nothing of `bytes` is stored on error.
    pub fn append_raw(&self, at: u64, bytes: &[u8]) -> Result<u64, ReplicaError> {
        self.inner.append_raw(at, bytes)
    }

    /// Deletes expired segments now (it also runs every `retention_check_interval`).
    ///
    /// # Errors
    /// Deleting a file failed.
    pub fn enforce_retention(&self) -> io::Result<RetentionReport> {
        self.inner.enforce_retention()
    }

    /// Reads and verifies every record from the lowest offset to the end (an fsck).
    ///
    /// # Errors
    /// The first corrupt record.
    pub fn verify(&self) -> Result<VerifyReport, ReadError> {
        self.inner.verify()
    }

    /// End of the log: the offset the next record will get.
    pub fn end_offset(&self) -> u64 {
        self.inner.end.load(Ordering::Acquire)
    }

    /// Registers `f`, called with the new end offset after every append (outside the writer
    /// lock; it must be quick). Once per store.
    pub fn on_append(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.inner.appended.set(Box::new(f));
    }

    /// Registers `f`, called with the duration of every completed fsync of the log (on the
    /// flusher's thread; it must be quick). Once per store.
    pub fn on_log_sync(&self, f: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.inner.synced.set(Box::new(f));
    }

    /// The segment size (a slave's must equal its master's).
    pub fn segment_bytes(&self) -> u64 {
        self.inner.config.segment_bytes
    }

    /// Lowest log offset still stored.
    pub fn min_offset(&self) -> u64 {
        self.inner.min.load(Ordering::Acquire)
    }

    /// Every byte below this is fsynced.
    pub fn durable_offset(&self) -> u64 {
        self.inner.flushed.load(Ordering::Acquire)
    }

    /// Why the store stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.inner.failure.get().cloned()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Stops writes, flushes everything, writes the checkpoint and removes the abort marker.
    ///
    /// # Errors
    /// The final flush failed; the abort marker stays, so the next open recovers.
    pub fn close(self) -> Result<(), FlushError> {
        self.shutdown()
    }

    /// As [`Store::close`], for a store shared behind an `Arc`: afterwards every append fails
    /// with [`AppendError::Closed`]; reads keep working. Calling it again does nothing.
    ///
    /// # Errors
    /// The final flush failed; the abort marker stays, so the next open recovers.
    pub fn shutdown(&self) -> Result<(), FlushError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        lock(&self.inner.writer).closed = true;
        lock(&self.inner.flush).shutdown = true;
        self.inner.flush_cv.notify_all();
        lock(&self.inner.alloc).stop = true;
        self.inner.alloc_cv.notify_all();
        *lock(&self.inner.stop) = true;
        self.inner.stop_cv.notify_all();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        let inner = &self.inner;
        let end = inner.end.load(Ordering::Acquire);
        let result = inner.flush_log(end).and_then(|()| inner.checkpoint());
        match result {
            Ok(()) if inner.failure.get().is_none() => {
                let abort = inner.config.dir.join("abort");
                std::fs::remove_file(&abort)
                    .and_then(|()| sync_parent_dir(&abort))
                    .map_err(|e| FlushError::Failed { reason: e.to_string().into() })
            }
            Ok(()) => Err(FlushError::Failed { reason: inner.failure.get().cloned().unwrap_or_default() }),
            Err(e) => Err(FlushError::Failed { reason: e.to_string().into() }),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "store did not shut down cleanly; the next open will recover");
        }
    }
}

/// An append whose durability wait failed, or the append itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendDurableError {
    #[error(transparent)]
    Append(AppendError),
    /// Stored at the given offsets but not known durable.
    #[error("{0}")]
    Flush(FlushError, Appended),
}

/// Background work (pre-touching segments, retention) yields the CPU to appends and reads:
/// on a small machine a 1 GiB pre-touch otherwise takes a whole core for seconds and shows up
/// as latency spikes. Raising one's own niceness needs no privilege.
fn lower_thread_priority() {
    const BACKGROUND_NICE: libc::c_int = 10;
    // SAFETY: plain syscalls on the calling thread's id; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::debug!("could not lower the priority of a background thread");
    }
}

/// Under async flush the periodic fsync of the log runs on its own thread that runs only when
/// nothing else wants the CPU (`SCHED_IDLE`): its bursts — writing back half a second of
/// appends, some 10 ms of CPU walking the mappings readers have of those pages — otherwise
/// preempt the connections' workers on a small machine (a lower e2e tail: docs/benchmarks/2026-12.md).
/// A normal thread preempts an idle-class one at once, and the
/// kernel counts a CPU running only idle-class threads as free when it places a waking thread.
/// The thread takes no store lock while it works (an idle-class lock holder would stall the
/// appenders); the flusher, at normal priority, keeps the checkpoints (which lock the index)
/// and any flush someone waits for. If the machine is saturated for long, the kernel's own
/// writeback takes over at its dirty-page limits.
fn idle_scheduling_class() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter struct.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!("could not move the writeback thread to the idle scheduling class");
    }
}

/// The file recording the log's master epochs ([`Epochs`]).
pub(crate) const EPOCHS_FILE: &str = "epochs";

/// The file recording removed topics: lines `<log offset> <topic>`.
const REMOVED_TOPICS_FILE: &str = "removed-topics";

fn load_removed(path: &Path) -> io::Result<BTreeMap<String, u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (at, topic) = l.split_once(' ').ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad line {l:?}")))?;
            let at = at.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad offset in {l:?}")))?;
            Ok((topic.to_owned(), at))
        })
        .collect()
}

fn save_removed(path: &Path, removed: &BTreeMap<String, u64>) -> io::Result<()> {
    let text: String = removed.iter().map(|(topic, at)| format!("{at} {topic}\n")).collect();
    crate::journal::replace_file(path, text.as_bytes())
}

fn record_matches(
    segments: &BTreeMap<u64, Arc<LogFile>>,
    seg: u64,
    log_offset: u64,
    size: u32,
    topic: &str,
    queue_id: u32,
    queue_offset: u64,
) -> bool {
    let base = seg_base(log_offset, seg);
    let Some(f) = segments.get(&base) else { return false };
    let rel = log_offset - base;
    if rel + u64::from(size) > seg {
        return false;
    }
    // SAFETY: only used while the store is opening and not shared.
    let b = unsafe { f.slice(rel, size as usize) };
    matches!(record::peek(b, size as usize, false), Ok(Frame::Record { len }) if len == size as usize)
        && record::check(b, log_offset).is_ok_and(|h| h.topic == topic && h.queue_id == queue_id && h.queue_offset == queue_offset)
}

/// Indexes a message by its unique id (`id_hash`, hashed by the caller) and its keys.
fn index_message(index: &mut Index, m: &NewMessage, id_hash: Option<u64>, log_offset: u64) -> io::Result<()> {
    if let Some(h) = id_hash {
        index.add(h, log_offset)?;
    }
    for k in &m.properties.keys {
        index.add(key_hash(&m.topic, k.as_bytes()), log_offset)?;
    }
    Ok(())
}

fn index_record(index: &mut Index, topic: &str, info: &record::DispatchInfo<'_>, log_offset: u64) -> io::Result<()> {
    if let Some(id) = info.unique_id {
        index.add(id_hash(id), log_offset)?;
    }
    for k in &info.keys {
        index.add(key_hash(topic, k), log_offset)?;
    }
    Ok(())
}

impl Inner {
    fn queue(&self, topic: &str, queue_id: u32) -> Option<QueueHandle> {
        self.topics.read().unwrap_or_else(|e| e.into_inner()).get(topic).and_then(|qs| qs.get(&queue_id)).cloned()
    }

    fn queue_or_create(&self, topic: &str, queue_id: u32) -> io::Result<QueueHandle> {
        if let Some(q) = self.queue(topic, queue_id) {
            return Ok(q);
        }
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = topics.get(topic).and_then(|qs| qs.get(&queue_id)) {
            return Ok(Arc::clone(q));
        }
        let dir = self.config.dir.join("consumequeue").join(topic).join(queue_id.to_string());
        let q = Arc::new(Mutex::new(ConsumeQueue::create(&dir, self.config.cq_entries_per_file)?));
        topics.entry(Arc::from(topic)).or_default().insert(queue_id, Arc::clone(&q));
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> NewMessage {
        NewMessage { topic: "t".into(), queue_id: i % 2, body: Bytes::from(vec![i as u8; 100]), ..Default::default() }
    }

    /// fsyncgate: after a failed fsync the store must not acknowledge anything, ever again,
    /// even though a retried fsync would "succeed".
    #[test]
    fn failed_fsync_stops_writes_and_is_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::small_for_tests(dir.path());
        config.flush = FlushMode::Sync { timeout: Duration::from_secs(5) };
        let (store, _) = Store::open(config).unwrap();
        store.append_durable(&[msg(0)]).unwrap();
        store.inner.fail_next_sync.store(true, Ordering::SeqCst);
        let err = store.append_durable(&[msg(1)]).unwrap_err();
        assert!(matches!(err, AppendDurableError::Flush(FlushError::Failed { .. }, _)), "{err:?}");
        let reason = store.failure().expect("failure recorded");
        assert!(reason.contains("fsync"), "{reason}");
        assert!(matches!(store.append(&[msg(2)]), Err(AppendError::Failed { .. })));
        let end = store.end_offset();
        assert!(matches!(store.wait_durable(end, Duration::from_secs(1)), Err(FlushError::Failed { .. })));
        assert!(store.close().is_err(), "close reports the failure and keeps the abort marker");
        assert!(dir.path().join("abort").exists());
    }

    /// One batch over interleaved queues and topics: each queue's messages get consecutive
    /// queue offsets from that queue's end, in batch order, and read back in that order.
    #[test]
    fn a_batch_over_interleaved_queues_counts_each_queue_on() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path())).unwrap();
        store.append(&[msg(0)]).unwrap(); // queue 0 of "t" starts at 1 below
        let other = |i| NewMessage { topic: "u".into(), ..msg(i) };
        let batch = [msg(2), msg(3), other(4), msg(6), msg(5), other(8), msg(7)];
        let got = store.append(&batch).unwrap();
        let offsets: Vec<u64> = got.messages.iter().map(|m| m.queue_offset).collect();
        assert_eq!(offsets, vec![1, 0, 0, 2, 1, 1, 2], "t/0: 1, 2 after msg(0); t/1: 0, 1, 2; u/0: 0, 1");
        let bodies = |topic: &str, q| -> Vec<u8> {
            store.read_queue(topic, q, 0, 10, 1 << 20).unwrap().messages.iter().map(|m| m.body[0]).collect()
        };
        assert_eq!(bodies("t", 0), vec![0, 2, 6]);
        assert_eq!(bodies("t", 1), vec![3, 5, 7]);
        assert_eq!(bodies("u", 0), vec![4, 8]);
    }

    /// A group append stores each batch as its own append would: in order, queue offsets dense
    /// across the batches, a bad batch refused alone, a batch that does not fit in the active
    /// segment after a roll (the others before it in one write), every record read back.
    #[test]
    fn a_group_append_keeps_each_batch_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path())).unwrap();
        let seg = store.segment_bytes();
        // Bodies sized so the group spills past the first segment.
        let big = |i: u32| NewMessage { body: Bytes::from(vec![i as u8; (seg / 8) as usize]), ..msg(i) };
        let bad = NewMessage { topic: String::new(), ..msg(99) };
        let batches: Vec<Vec<NewMessage>> = vec![
            vec![msg(0), msg(1)],
            vec![bad],
            vec![big(2)],
            vec![big(4), big(3)],
            vec![],
            vec![big(6), big(5), big(8), big(7)],
            vec![big(10), big(9), big(12), big(11)],
            vec![msg(14)],
        ];
        let refs: Vec<&[NewMessage]> = batches.iter().map(Vec::as_slice).collect();
        let results = store.append_many(&refs);
        assert_eq!(results.len(), batches.len());
        assert!(matches!(results[1], Err(AppendError::Message { index: 0, .. })), "{:?}", results[1]);
        assert!(matches!(results[4], Err(AppendError::EmptyBatch)), "{:?}", results[4]);
        let ok: Vec<&Appended> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 6);
        // In order, each contiguous, and the group crossed into the next segment.
        for w in ok.windows(2) {
            assert!(w[0].end_offset <= w[1].messages[0].log_offset, "batches in order");
        }
        for a in &ok {
            let (first, last) = (a.messages[0].log_offset, a.messages[a.messages.len() - 1].log_offset);
            assert_eq!(first / seg, last / seg, "a batch stays in one segment");
            let mut at = first;
            for m in &a.messages {
                assert_eq!(m.log_offset, at, "a batch is contiguous");
                at += u64::from(m.record_bytes);
            }
            assert_eq!(a.end_offset, at);
        }
        assert!(ok[ok.len() - 1].end_offset > seg, "the group spilled past the first segment");
        assert_eq!(store.end_offset(), ok[ok.len() - 1].end_offset);
        let bodies = |q| -> Vec<u8> { store.read_queue("t", q, 0, 100, 64 << 20).unwrap().messages.iter().map(|m| m.body[0]).collect() };
        assert_eq!(bodies(0), vec![0, 2, 4, 6, 8, 10, 12, 14], "queue 0 in send order, offsets dense");
        assert_eq!(bodies(1), vec![1, 3, 5, 7, 9, 11], "queue 1 in send order, offsets dense");
        for a in &ok {
            for m in &a.messages {
                assert_eq!(store.read(m.log_offset).unwrap().queue_offset, m.queue_offset);
            }
        }
        // The same again after a restart: recovery finds every record.
        drop(store);
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path())).unwrap();
        assert_eq!(store.read_queue("t", 0, 0, 100, 64 << 20).unwrap().messages.len(), 8);
        assert_eq!(store.read_queue("t", 1, 0, 100, 64 << 20).unwrap().messages.len(), 6);
    }

    /// A batch's consume-queue entries are written before the log's end is published; a reader
    /// in between must see the queue end before them, or a long poll takes "messages present but
    /// unreadable" for a retry queue's messages that are not due and sleeps.
    #[test]
    fn entries_of_an_unpublished_append_are_not_in_the_queue_yet() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(StoreConfig::small_for_tests(dir.path())).unwrap();
        let m = |i| NewMessage { queue_id: 0, ..msg(i) };
        let first = store.append(&[m(0), m(1)]).unwrap();
        let second = store.append(&[m(2), m(3)]).unwrap();
        let (topic, q) = (m(0).topic, 0);
        // Roll the published end back to between the batches: the state a reader sees while
        // the second batch is being appended.
        store.inner.end.store(first.end_offset, Ordering::Release);
        let read = store.read_queue(&topic, q, 0, 10, 1 << 20).unwrap();
        assert_eq!((read.messages.len(), read.next_offset, read.max_offset), (2, 2, 2));
        let read = store.read_queue(&topic, q, 2, 10, 1 << 20).unwrap();
        assert_eq!((read.messages.len(), read.next_offset, read.max_offset), (0, 2, 2));
        assert!(store.is_readable(&topic, q, 1));
        assert!(!store.is_readable(&topic, q, 2));
        store.inner.end.store(second.end_offset, Ordering::Release);
        let read = store.read_queue(&topic, q, 2, 10, 1 << 20).unwrap();
        assert_eq!((read.messages.len(), read.next_offset, read.max_offset), (2, 4, 4));
        assert!(store.is_readable(&topic, q, 3));
        assert!(!store.is_readable(&topic, q, 4));
        assert!(!store.is_readable("no-such-topic", 0, 0));
    }
}
