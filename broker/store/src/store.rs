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
use crate::error::{AppendError, FlushError, OpenError, ReadError, ReplicaError};
use crate::index::{Index, id_hash, key_hash};
use crate::mmap::{LogFile, sync_parent_dir};
use crate::record::{self, FILLER_BYTES_MIN, Frame, NewMessage, RECORD_OVERHEAD_MAX, RecordError, StoredMessage};

mod append;

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
    /// Called with the new end after every append (replication wakes its waiting slaves).
    appended: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
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
    /// Opens (creating if needed) the store in `config.dir` with the system clock.
    ///
    /// # Errors
    /// See [`OpenError`]: bad config, directory locked, I/O, or corruption in durable data.
    pub fn open(config: StoreConfig) -> Result<(Self, RecoveryReport), OpenError> {
        Self::open_with(config, Arc::new(SystemClock), Arc::new(StatvfsProbe))
    }

    /// Opens with an explicit clock and disk probe (tests move time and fake disk usage).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(config: StoreConfig, clock: Arc<dyn Clock>, disk: Arc<dyn DiskProbe>) -> Result<(Self, RecoveryReport), OpenError> {
        let started = Instant::now();
        config.validate()?;
        let dir = config.dir.clone();
        let seg = config.segment_bytes;
        let log_dir = dir.join("commitlog");
        let cq_dir = dir.join("consumequeue");
        let index_dir = dir.join("index");
        let removed_path = dir.join(REMOVED_TOPICS_FILE);
        let removed_topics = load_removed(&removed_path).map_err(io_err("read", &removed_path))?;
        // Consume queues and index are derived from the log: when either directory is gone
        // (an operator may delete them to force it), everything is rebuilt from the log.
        let rebuild_derived =
            (!cq_dir.is_dir() || !index_dir.is_dir()) && std::fs::read_dir(&log_dir).is_ok_and(|mut d| d.next().is_some());
        for d in [&dir, &log_dir, &cq_dir] {
            std::fs::create_dir_all(d).map_err(io_err("create directory", d))?;
        }
        let lock_path = dir.join("lock");
        let lock_file = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open", &lock_path))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock_file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(OpenError::Locked { dir });
        }
        let abort_path = dir.join("abort");
        let ckpt_path = dir.join("checkpoint");
        let checkpoint = Checkpoint::read(&ckpt_path).map_err(io_err("read", &ckpt_path))?;
        let has_segments = std::fs::read_dir(&log_dir).map_err(io_err("list", &log_dir))?.next().is_some();
        // A store with no segments yet is new, not crashed.
        let crashed = abort_path.exists() || (checkpoint.is_none() && has_segments);
        File::create(&abort_path).and_then(|_| sync_parent_dir(&abort_path)).map_err(io_err("create", &abort_path))?;

        // Log segments.
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(&log_dir).map_err(io_err("list", &log_dir))? {
            let entry = entry.map_err(io_err("list", &log_dir))?;
            let path = entry.path();
            let Some(base) = entry.file_name().to_str().and_then(parse_file_name) else {
                if path.extension().is_some_and(|e| e == "tmp") {
                    std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                continue;
            };
            let n_bytes = entry.metadata().map_err(io_err("stat", &path))?.len();
            if n_bytes != seg || base % seg != 0 {
                return Err(OpenError::SegmentSize { path, n_bytes, expected: seg });
            }
            segments.insert(base, Arc::new(LogFile::open(&path, seg).map_err(io_err("map", &path))?));
        }
        if let (Some(&first), Some(&last)) = (segments.keys().next(), segments.keys().next_back())
            && let Some(missing_at) = (first..=last).step_by(seg as usize).find(|b| !segments.contains_key(b))
        {
            return Err(OpenError::SegmentGap { missing_at });
        }
        if segments.is_empty() {
            let path = log_dir.join(file_name(0));
            segments.insert(0, Arc::new(LogFile::create(&path, seg).map_err(io_err("create", &path))?));
        }
        let first_base = *segments.keys().next().expect("at least one segment");

        // Consume queues and index.
        let mut topics: HashMap<Arc<str>, HashMap<u32, ConsumeQueue>> = HashMap::new();
        for t in std::fs::read_dir(&cq_dir).map_err(io_err("list", &cq_dir))? {
            let t = t.map_err(io_err("list", &cq_dir))?;
            let Some(topic) = t.file_name().to_str().map(str::to_owned) else { continue };
            if record::validate_topic(&topic).is_err() {
                continue;
            }
            let tdir = t.path();
            for q in std::fs::read_dir(&tdir).map_err(io_err("list", &tdir))? {
                let q = q.map_err(io_err("list", &tdir))?;
                let Some(queue_id) = q.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let qdir = q.path();
                let cq = ConsumeQueue::open(&qdir, config.cq_entries_per_file).map_err(io_err("open consume queue", &qdir))?;
                topics.entry(Arc::from(topic.as_str())).or_default().insert(queue_id, cq);
            }
        }
        let (mut index, index_rebuild_from) =
            Index::open(&index_dir, config.index_slots, config.index_entries_per_file).map_err(io_err("open index", &index_dir))?;

        // Where to start verifying. After a clean stop everything up to the checkpoint is
        // trusted; after a crash the scan starts at the segment holding the older of the two
        // checkpointed positions, so the records just below it are verified too.
        let ck = checkpoint.unwrap_or_default();
        let mut start = ck.log_flushed.min(ck.dispatch_safe);
        if let Some(r) = index_rebuild_from {
            start = start.min(r);
        }
        if rebuild_derived {
            tracing::warn!("consume queues or index missing; rebuilding them from the whole log");
            start = 0;
        }
        if crashed {
            start = seg_base(start, seg);
        }
        let last_base = *segments.keys().next_back().expect("non-empty");
        let start = start.clamp(first_base, last_base + seg);
        let durable = if checkpoint.is_some() { ck.log_flushed } else { 0 };

        // Trim derived data to what lies below the scan start.
        for (topic, queues) in &mut topics {
            for (&queue_id, cq) in queues.iter_mut() {
                let is_real = |q: u64, e: &CqEntry| record_matches(&segments, seg, e.log_offset, e.size, topic, queue_id, q);
                cq.truncate_from_log(start, is_real).map_err(io_err("truncate consume queue", &cq_dir))?;
            }
        }
        index.truncate_from_log(start).map_err(io_err("truncate index", &index_dir))?;

        // Scan, verify and re-dispatch.
        let mut pos = start;
        let mut records_recovered = 0u64;
        let mut bad: Option<(u64, String)> = None;
        'segments: while pos < last_base + seg {
            let base = seg_base(pos, seg);
            let Some(file) = segments.get(&base) else { break };
            let mut mapped_to = 0;
            loop {
                let rel = pos - base;
                if rel + SCAN_MAP_MARGIN_BYTES >= mapped_to {
                    // The mapping reads around nothing (mmap.rs): read the scan's way in ahead.
                    // A record past `mapped_to` is still read, page by page.
                    mapped_to = (rel + MAP_IN_BYTES_MAX).min(seg);
                    file.map_in(rel, mapped_to, seg);
                }
                // SAFETY: nothing else has the store yet; the file is ours alone.
                let rest = unsafe { file.slice(rel, (seg - rel) as usize) };
                let frame = record::peek(rest, (seg - rel) as usize - FILLER_BYTES_MIN, true);
                let len = match frame {
                    Ok(Frame::Filler { len }) => {
                        pos += len as u64;
                        continue 'segments;
                    }
                    Ok(Frame::Record { len }) => len,
                    Err(RecordError::Short(_)) if rest.iter().all(|&b| b == 0) => break 'segments,
                    Err(e) => {
                        bad = Some((pos, e.to_string()));
                        break 'segments;
                    }
                };
                let head = match record::check(&rest[..len], pos) {
                    Ok(h) => h,
                    Err(e) => {
                        bad = Some((pos, e.to_string()));
                        break 'segments;
                    }
                };
                if removed_topics.get(head.topic).is_some_and(|&at| pos < at) {
                    // A record of a topic removed later: checked, kept in the log, not indexed.
                    records_recovered += 1;
                    pos += len as u64;
                    continue;
                }
                let cq = topics.entry(Arc::from(head.topic)).or_default().entry(head.queue_id);
                let cq = match cq {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let qdir = cq_dir.join(head.topic).join(head.queue_id.to_string());
                        v.insert(ConsumeQueue::create(&qdir, config.cq_entries_per_file).map_err(io_err("create consume queue", &qdir))?)
                    }
                };
                let info = match record::dispatch_info(head.props) {
                    Ok(i) => i,
                    Err(e) => {
                        bad = Some((pos, e.to_string()));
                        break 'segments;
                    }
                };
                match cq.put(head.queue_offset, CqEntry { log_offset: pos, size: len as u32, tag_hash: info.tag_hash }) {
                    Ok(()) => {}
                    Err(PutError::Order(e)) => {
                        bad = Some((pos, format!("queue offset does not follow its consume queue: {e}")));
                        break 'segments;
                    }
                    Err(PutError::Io(e)) => return Err(OpenError::Io { op: "write consume queue", path: cq_dir.clone(), source: e }),
                }
                index_record(&mut index, head.topic, &info, pos).map_err(io_err("write index", &index_dir))?;
                records_recovered += 1;
                pos += len as u64;
            }
        }
        // A zero-filled remainder is the clean end of the log, not damage.
        if let Some((offset, _)) = &bad {
            let base = seg_base(*offset, seg);
            let rel = offset - base;
            // SAFETY: the store is not shared yet.
            let head = unsafe { segments[&base].slice(rel, (seg - rel).min(8) as usize) };
            if head.iter().all(|&b| b == 0) {
                bad = None;
            }
        }
        if let Some((offset, reason)) = &bad {
            if *offset < durable {
                return Err(OpenError::CorruptCommitted { offset: *offset, durable, reason: reason.clone() });
            }
            tracing::warn!(offset, reason, "truncating the commit log's torn tail");
        }
        let end = pos;
        let truncated_at = bad.as_ref().map(|(o, _)| *o);
        let end_base = seg_base(end, seg);
        if (crashed || truncated_at.is_some())
            && let Some(f) = segments.get(&end_base)
        {
            // SAFETY: the store is not shared yet.
            unsafe { f.zero_from(end - end_base) }.map_err(io_err("zero the log tail", f.path()))?;
        }
        for (_, f) in segments.split_off(&(end_base + 1)) {
            std::fs::remove_file(f.path()).map_err(io_err("remove", f.path()))?;
        }
        if let std::collections::btree_map::Entry::Vacant(v) = segments.entry(end_base) {
            let path = log_dir.join(file_name(end_base));
            v.insert(Arc::new(LogFile::create(&path, seg).map_err(io_err("create", &path))?));
        }
        for (_, f) in segments.range(seg_base(start, seg)..) {
            f.sync().map_err(io_err("fsync", f.path()))?;
        }
        let min = *segments.keys().next().expect("non-empty");
        for queues in topics.values_mut() {
            for cq in queues.values_mut() {
                cq.trim_below_log(min).map_err(io_err("trim consume queue", &cq_dir))?;
            }
        }
        index.trim_below_log(min).map_err(io_err("trim index", &index_dir))?;

        let active = Arc::clone(&segments[&end_base]);
        let record_max = config.message_bytes_max as usize + RECORD_OVERHEAD_MAX;
        let inner = Arc::new(Inner {
            writer: Mutex::new(Writer { scratch: Vec::new(), active, active_base: end_base, pos: end, last_store_ms: 0, closed: false }),
            segments: RwLock::new(segments),
            retired: Mutex::new(Vec::new()),
            end: AtomicU64::new(end),
            min: AtomicU64::new(min),
            dispatched: AtomicU64::new(end),
            flushed: AtomicU64::new(end),
            uncached_below: AtomicU64::new(0),
            failure: OnceLock::new(),
            topics: RwLock::new(
                topics.into_iter().map(|(t, qs)| (t, qs.into_iter().map(|(q, cq)| (q, Arc::new(Mutex::new(cq)))).collect())).collect(),
            ),
            index: Mutex::new(index),
            flush: Mutex::new(FlushState::default()),
            flush_cv: Condvar::new(),
            alloc: Mutex::new(Alloc::default()),
            alloc_cv: Condvar::new(),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            flush_finished: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            record_max,
            config,
            clock,
            disk,
            removed: Mutex::new(removed_topics),
            appended: OnceLock::new(),
            _lock: lock_file,
        });
        inner.checkpoint().map_err(io_err("write checkpoint", &ckpt_path))?;

        let mut threads = Vec::new();
        let spawn = |name: &str, f: fn(&Inner)| {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new().name(name.into()).spawn(move || f(&inner)).map_err(io_err("spawn thread", Path::new(name)))
        };
        threads.push(spawn("wasmq-store-flush", Inner::run_flusher)?);
        threads.push(spawn("wasmq-store-alloc", Inner::run_allocator)?);
        threads.push(spawn("wasmq-store-retention", Inner::run_retention)?);
        if matches!(inner.config.flush, FlushMode::Async { .. }) {
            threads.push(spawn("wasmq-store-writeback", Inner::run_writeback)?);
        }
        inner.request_spare(end_base + seg);

        let report =
            RecoveryReport { crashed, scanned_from: start, records_recovered, truncated_at, end_offset: end, elapsed: started.elapsed() };
        if crashed {
            tracing::info!(?report, "store recovered after an unclean shutdown");
        }
        Ok((Self { inner, threads: Mutex::new(threads) }, report))
    }

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
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    for (topic, at) in removed {
        writeln!(f, "{at} {topic}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent_dir(path)
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

    fn segment_path(&self, base: u64) -> PathBuf {
        self.config.dir.join("commitlog").join(file_name(base))
    }

    fn take_spare(&self, base: u64) -> io::Result<Arc<LogFile>> {
        let mut a = lock(&self.alloc);
        while a.busy == Some(base) {
            a = self.alloc_cv.wait(a).unwrap_or_else(|e| e.into_inner());
        }
        if a.want == Some(base) {
            a.want = None;
        }
        match a.ready.take() {
            Some((b, f)) if b == base => Ok(f),
            _ => {
                drop(a);
                Ok(Arc::new(LogFile::create(&self.segment_path(base), self.config.segment_bytes)?))
            }
        }
    }

    fn request_spare(&self, base: u64) {
        let mut a = lock(&self.alloc);
        a.want = Some(base);
        self.alloc_cv.notify_all();
    }

    /// Faults in `file`'s pages from `from` to its end, a step at a time, until stopped.
    fn populate(&self, file: &LogFile, from: u64) {
        let mut at = from;
        while at < file.len() && !lock(&self.alloc).stop {
            file.populate_to(at, at + POPULATE_STEP_BYTES);
            at += POPULATE_STEP_BYTES;
        }
    }

    /// The allocator thread: faults in the rest of the active segment after open, then keeps
    /// the next segment created and faulted in before the writer needs it.
    fn run_allocator(&self) {
        lower_thread_priority();
        if self.config.pretouch_segments {
            let end = self.end.load(Ordering::Acquire);
            if let Some((base, active)) = self.segment_for(end) {
                self.populate(&active, end - base);
            }
        }
        let mut a = lock(&self.alloc);
        loop {
            if a.stop {
                return;
            }
            let Some(base) = a.want.take() else {
                a = self.alloc_cv.wait(a).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            if a.ready.as_ref().is_some_and(|(b, _)| *b == base) {
                continue;
            }
            a.busy = Some(base);
            drop(a);
            let made = LogFile::create(&self.segment_path(base), self.config.segment_bytes).map(Arc::new);
            a = lock(&self.alloc);
            a.busy = None;
            let populate = match made {
                Ok(f) => {
                    a.ready = Some((base, Arc::clone(&f)));
                    self.config.pretouch_segments.then_some(f)
                }
                Err(e) => {
                    tracing::warn!(base, error = %e, "could not preallocate the next segment");
                    None
                }
            };
            self.alloc_cv.notify_all();
            // The segment is usable from here on: a writer that rolls before the pre-touch ends
            // takes it at once (pre-touching never changes contents), instead of waiting.
            if let Some(f) = populate {
                drop(a);
                self.populate(&f, 0);
                a = lock(&self.alloc);
            }
        }
    }

    fn on_durable(&self, end_offset: u64, done: Waiter) {
        if let Some(reason) = self.failure.get() {
            return done(Err(FlushError::Failed { reason: Arc::clone(reason) }));
        }
        if self.flushed.load(Ordering::Acquire) >= end_offset {
            return done(Ok(()));
        }
        let mut st = lock(&self.flush);
        if st.shutdown {
            drop(st);
            return done(Err(FlushError::Closed));
        }
        st.waiters.push((end_offset, done));
        let group_complete = st.gather_target > 0 && st.parked.len() + st.waiters.len() >= st.gather_target;
        if st.flusher_idle || group_complete {
            self.flush_cv.notify_one();
        }
    }

    fn wait_durable(&self, end_offset: u64, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        let check = || {
            if self.flushed.load(Ordering::Acquire) >= end_offset {
                return Some(Ok(()));
            }
            if let Some(reason) = self.failure.get() {
                return Some(Err(FlushError::Failed { reason: Arc::clone(reason) }));
            }
            None
        };
        if let Some(r) = check() {
            return r;
        }
        let me = std::thread::current();
        {
            let mut st = lock(&self.flush);
            if self.flush_finished.load(Ordering::Acquire) {
                return Err(FlushError::Closed);
            }
            st.parked.push((end_offset, me.clone()));
            let group_complete = st.gather_target > 0 && st.parked.len() + st.waiters.len() >= st.gather_target;
            if st.flusher_idle || group_complete {
                self.flush_cv.notify_one();
            }
        }
        loop {
            if let Some(r) = check() {
                return r;
            }
            let now = Instant::now();
            let closed = self.flush_finished.load(Ordering::Acquire);
            if now >= deadline || closed {
                lock(&self.flush).parked.retain(|(_, t)| t.id() != me.id());
                return check().unwrap_or(Err(if closed { FlushError::Closed } else { FlushError::Timeout { end_offset } }));
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// fsyncs the log segments holding `[flushed, target)`.
    fn flush_log(&self, target: u64) -> io::Result<()> {
        let from = self.flushed.load(Ordering::Acquire);
        if target <= from {
            return Ok(());
        }
        let seg = self.config.segment_bytes;
        let files: Vec<(u64, Arc<LogFile>)> = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(seg_base(from, seg)..=seg_base(target - 1, seg))
            .map(|(&b, f)| (b, Arc::clone(f)))
            .collect();
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for (base, f) in files {
            f.sync_range(from.max(base) - base, (target - base).min(seg))?;
        }
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Drops the cached pages of the flushed log more than `cached_bytes_behind` behind the
    /// flushed position, in steps of at least [`DROP_BEHIND_STEP`] bytes (or a segment): the pages freed are
    /// reused by the next appends while still warm.
    fn drop_cold_caches(&self) {
        let Some(keep) = self.config.cached_bytes_behind else { return };
        let seg = self.config.segment_bytes;
        let limit = self.flushed.load(Ordering::Acquire).saturating_sub(keep);
        let from = self.uncached_below.load(Ordering::Acquire);
        if limit < from + DROP_BEHIND_STEP.min(seg) {
            return;
        }
        let cold: Vec<(u64, Arc<LogFile>)> = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(seg_base(from, seg)..limit)
            .map(|(&b, f)| (b, Arc::clone(f)))
            .collect();
        for (base, f) in cold {
            f.drop_cache(from.saturating_sub(base), limit - base);
        }
        // Flusher and writeback thread may both get here; the mark only moves forward.
        self.uncached_below.fetch_max(limit, Ordering::AcqRel);
    }

    fn fail(&self, what: &str, e: &io::Error) -> Arc<str> {
        let reason: Arc<str> = format!("{what} failed: {e}; writes stopped (a failed fsync is never retried)").into();
        if self.failure.set(Arc::clone(&reason)).is_ok() {
            tracing::error!(%reason, "store failed");
        }
        self.failure.get().cloned().unwrap_or(reason)
    }

    fn run_flusher(&self) {
        let (wait, sync) = match self.config.flush {
            FlushMode::Sync { .. } => (SYNC_FLUSH_POLL, true),
            FlushMode::Async { interval } => (interval, false),
        };
        let mut last_checkpoint = Instant::now();
        let mut last_group = 0usize;
        let mut st = lock(&self.flush);
        loop {
            let end = self.end.load(Ordering::Acquire);
            let behind = end > self.flushed.load(Ordering::Acquire);
            let asked = !st.waiters.is_empty() || !st.parked.is_empty();
            if st.shutdown {
                break;
            }
            if !(behind && (sync || asked)) {
                st.flusher_idle = true;
                st = self.flush_cv.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
                st.flusher_idle = false;
                // Async mode: the writeback thread flushes once per interval.
            } else {
                let group = st.parked.len() + st.waiters.len();
                if sync && group < last_group {
                    st.gather_target = last_group;
                    st = self.flush_cv.wait_timeout(st, GROUP_GATHER_MAX).unwrap_or_else(|e| e.into_inner()).0;
                    st.gather_target = 0;
                }
                drop(st);
                last_group = self.flush_and_notify(self.end.load(Ordering::Acquire));
                st = lock(&self.flush);
            }
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval {
                drop(st);
                if let Err(e) = self.checkpoint() {
                    self.fail("checkpoint", &e);
                    self.fail_waiters();
                }
                last_checkpoint = Instant::now();
                st = lock(&self.flush);
            }
        }
        // Shutdown: the closing thread does the final flush; fail nobody who can still be
        // served by it.
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        let end = self.end.load(Ordering::Acquire);
        let r = if self.failure.get().is_some() {
            Err(())
        } else {
            self.flush_log(end).map_err(|e| {
                self.fail("fsync", &e);
            })
        };
        let parked = {
            let mut st = lock(&self.flush);
            self.flush_finished.store(true, Ordering::Release);
            std::mem::take(&mut st.parked)
        };
        for (_, t) in parked {
            t.unpark();
        }
        for (offset, w) in waiters {
            w(match r {
                Ok(()) if offset <= self.flushed.load(Ordering::Acquire) => Ok(()),
                _ => Err(FlushError::Closed),
            });
        }
    }

    /// The writeback thread (async flush only): fsyncs the log once per interval, in the idle
    /// scheduling class ([`idle_scheduling_class`]), until stopped.
    fn run_writeback(&self) {
        let FlushMode::Async { interval } = self.config.flush else { return };
        idle_scheduling_class();
        let mut stop = lock(&self.stop);
        loop {
            if *stop {
                return;
            }
            stop = self.stop_cv.wait_timeout(stop, interval).unwrap_or_else(|e| e.into_inner()).0;
            if *stop {
                return;
            }
            drop(stop);
            let _ = self.flush_and_notify(self.end.load(Ordering::Acquire));
            stop = lock(&self.stop);
        }
    }

    /// Flushes up to `target` and wakes everyone it covered; returns how many that was.
    fn flush_and_notify(&self, target: u64) -> usize {
        if self.failure.get().is_some() {
            self.fail_waiters();
            return 0;
        }
        match self.flush_log(target) {
            Ok(()) => {
                let flushed = self.flushed.load(Ordering::Acquire);
                let mut st = lock(&self.flush);
                let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters).into_iter().partition(|(o, _)| *o <= flushed);
                st.waiters = keep;
                let (wake, parked): (Vec<_>, Vec<_>) = std::mem::take(&mut st.parked).into_iter().partition(|(o, _)| *o <= flushed);
                st.parked = parked;
                drop(st);
                let n = wake.len() + done.len();
                for (_, t) in wake {
                    t.unpark();
                }
                for (_, w) in done {
                    w(Ok(()));
                }
                self.drop_cold_caches();
                n
            }
            Err(e) => {
                self.fail("fsync of the commit log", &e);
                self.fail_waiters();
                0
            }
        }
    }

    fn fail_waiters(&self) {
        let reason = self.failure.get().cloned().unwrap_or_else(|| "store failed".into());
        let (waiters, parked) = {
            let mut st = lock(&self.flush);
            (std::mem::take(&mut st.waiters), std::mem::take(&mut st.parked))
        };
        for (_, t) in parked {
            t.unpark();
        }
        for (_, w) in waiters {
            w(Err(FlushError::Failed { reason: Arc::clone(&reason) }));
        }
    }

    /// Flushes consume queues and index, then records how far log and derived data are durable.
    fn checkpoint(&self) -> io::Result<()> {
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let queues: Vec<QueueHandle> =
            self.topics.read().unwrap_or_else(|e| e.into_inner()).values().flat_map(|qs| qs.values().cloned()).collect();
        for q in queues {
            let files = lock(&q).take_dirty();
            for f in files {
                f.sync_data()?;
            }
        }
        let files = lock(&self.index).take_dirty()?;
        for f in files {
            f.sync_data()?;
        }
        let ck =
            Checkpoint { log_flushed: self.flushed.load(Ordering::Acquire), dispatch_safe: dispatched, written_ms: self.clock.now_ms() };
        ck.write(&self.config.dir.join("checkpoint"))
    }

    fn segment_for(&self, offset: u64) -> Option<(u64, Arc<LogFile>)> {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).range(..=offset).next_back().map(|(&b, f)| (b, Arc::clone(f)))
    }

    fn read(&self, log_offset: u64) -> Result<StoredMessage, ReadError> {
        let end = self.end.load(Ordering::Acquire);
        let min = self.min.load(Ordering::Acquire);
        if log_offset < min {
            return Err(ReadError::Trimmed { requested: log_offset, min });
        }
        if log_offset >= end {
            return Err(ReadError::BeyondEnd { requested: log_offset, end });
        }
        let Some((base, file)) = self.segment_for(log_offset) else { return Err(ReadError::Trimmed { requested: log_offset, min }) };
        let seg = self.config.segment_bytes;
        let rel = log_offset - base;
        let published = (end - base).min(seg) - rel;
        // SAFETY: below the published end; never rewritten while the store is shared.
        let rest = unsafe { file.slice(rel, published.min(self.record_max as u64 + 8) as usize) };
        let len = match record::peek(rest, self.record_max, false) {
            Ok(Frame::Record { len }) => len,
            Ok(Frame::Filler { .. }) => return Err(ReadError::NotARecord { offset: log_offset }),
            Err(reason) => return Err(ReadError::Corrupt { offset: log_offset, reason }),
        };
        // SAFETY: as above.
        let bytes = unsafe { file.bytes(rel, len) };
        record::decode(bytes, log_offset).map_err(|reason| ReadError::Corrupt { offset: log_offset, reason })
    }

    fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max_count: usize, max_bytes: usize) -> Result<QueueRead, ReadError> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(QueueRead { messages: Vec::new(), next_offset: from, min_offset: 0, max_offset: 0 });
        };
        let (entries, min, max) = {
            let cq = lock(&cq);
            if from < cq.min() {
                return Err(ReadError::Trimmed { requested: from, min: cq.min() });
            }
            (cq.get(from, max_count), cq.min(), cq.max())
        };
        let end = self.end.load(Ordering::Acquire);
        // Map the span the entries point into at once (bounded; the span's other records belong
        // to other queues, whose readers use the same mapping).
        if let (Some(first), Some(last)) = (entries.first(), entries.last())
            && let Some((base, file)) = self.segment_for(first.log_offset)
        {
            let to = (last.log_offset + u64::from(last.size))
                .min(end)
                .min(base + self.config.segment_bytes)
                .min(first.log_offset + MAP_IN_BYTES_MAX);
            file.map_in(first.log_offset - base, to.saturating_sub(base), end.saturating_sub(base));
        }
        let mut messages = Vec::with_capacity(entries.len());
        let mut n_bytes = 0usize;
        // Entries of a batch still being appended (its consume-queue entries are written before
        // the log's end is published) are not in the queue yet: the queue ends before them.
        let mut max = max;
        for (i, e) in entries.into_iter().enumerate() {
            if e.log_offset + u64::from(e.size) > end {
                max = from.max(min) + i as u64;
                break;
            }
            if !messages.is_empty() && n_bytes + e.size as usize > max_bytes {
                break;
            }
            match self.read(e.log_offset) {
                Ok(m) => messages.push(m),
                Err(ReadError::Trimmed { .. }) => {
                    let min = self.queue_bounds_min(topic, queue_id);
                    return Err(ReadError::Trimmed { requested: from, min });
                }
                Err(err) => return Err(err),
            }
            n_bytes += e.size as usize;
        }
        let next_offset = from.max(min) + messages.len() as u64;
        Ok(QueueRead { messages, next_offset, min_offset: min, max_offset: max })
    }

    fn queue_bounds_min(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id).map(|q| lock(&q).min()).unwrap_or(0)
    }

    fn lookup(&self, hash: u64, max: usize, matches: impl Fn(&StoredMessage) -> bool) -> Result<Vec<StoredMessage>, ReadError> {
        let mut candidates = Vec::new();
        lock(&self.index).lookup(hash, |o| {
            candidates.push(o);
            candidates.len() < INDEX_CANDIDATES_MAX
        });
        let mut out = Vec::new();
        for o in candidates {
            match self.read(o) {
                Ok(m) if matches(&m) => {
                    out.push(m);
                    if out.len() >= max {
                        break;
                    }
                }
                Ok(_) | Err(ReadError::Trimmed { .. } | ReadError::BeyondEnd { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn read_raw(&self, from: u64, max_bytes: usize) -> Result<RawChunk, ReadError> {
        let end = self.end.load(Ordering::Acquire);
        let min = self.min.load(Ordering::Acquire);
        if from < min {
            return Err(ReadError::Trimmed { requested: from, min });
        }
        if from >= end {
            return Ok(RawChunk { start_offset: from, bytes: Bytes::new() });
        }
        let Some((base, file)) = self.segment_for(from) else { return Err(ReadError::Trimmed { requested: from, min }) };
        let seg = self.config.segment_bytes;
        let limit = (end - base).min(seg);
        let mut rel = from - base;
        file.map_in(rel, (rel + max_bytes as u64).min(limit), limit);
        while rel < limit {
            // SAFETY: below the published end.
            let rest = unsafe { file.slice(rel, (limit - rel) as usize) };
            let len = match record::peek(rest, self.record_max, false) {
                Ok(Frame::Record { len } | Frame::Filler { len }) => len as u64,
                Err(reason) => return Err(ReadError::Corrupt { offset: base + rel, reason }),
            };
            if rel > from - base && rel + len - (from - base) > max_bytes as u64 {
                break;
            }
            rel += len;
        }
        let start = from - base;
        // SAFETY: below the published end.
        Ok(RawChunk { start_offset: from, bytes: unsafe { file.bytes(start, (rel - start) as usize) } })
    }

    fn append_raw(&self, at: u64, bytes: &[u8]) -> Result<u64, ReplicaError> {
        let seg = self.config.segment_bytes;
        let mut w = lock(&self.writer);
        self.check_writable(&w)?;
        if at != w.pos {
            let empty = w.pos == w.active_base && self.min.load(Ordering::Acquire) == w.active_base && at.is_multiple_of(seg) && at > w.pos;
            if !empty {
                return Err(ReplicaError::OffsetMismatch { expected: w.pos, got: at });
            }
            let f = self.take_spare(at).map_err(|e| AppendError::Io { op: "create segment", reason: e.to_string().into() })?;
            let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
            for (_, old) in std::mem::take(&mut *segs) {
                let _ = std::fs::remove_file(old.path());
            }
            segs.insert(at, Arc::clone(&f));
            drop(segs);
            w.active = f;
            w.active_base = at;
            w.pos = at;
            self.min.store(at, Ordering::Release);
            self.end.store(at, Ordering::Release);
            self.dispatched.store(at, Ordering::Release);
            self.flushed.store(at, Ordering::Release);
            self.request_spare(at + seg);
        }
        // Check everything first: nothing is written unless all of it is valid.
        let corrupt = |offset: u64, reason: String| ReplicaError::Corrupt { offset, reason };
        let mut records = Vec::new();
        let mut i = 0usize;
        let mut pos = at;
        let mut seg_end = w.active_base + seg;
        while i < bytes.len() {
            let rest = &bytes[i..];
            let in_seg = (seg_end - pos) as usize;
            let view = &rest[..rest.len().min(in_seg)];
            match record::peek(view, self.record_max.min(in_seg.saturating_sub(FILLER_BYTES_MIN)), false) {
                Ok(Frame::Filler { len }) if len == in_seg => {
                    records.push((i, len, true));
                    seg_end += seg;
                    pos += len as u64;
                    i += len;
                }
                Ok(Frame::Filler { len }) => {
                    return Err(corrupt(pos, format!("filler of {len} bytes does not end the {seg}-byte segment")));
                }
                Ok(Frame::Record { len }) => {
                    let head = record::check(&rest[..len], pos).map_err(|e| corrupt(pos, e.to_string()))?;
                    record::validate_topic(head.topic).map_err(|e| corrupt(pos, e.to_string()))?;
                    record::dispatch_info(head.props).map_err(|e| corrupt(pos, e.to_string()))?;
                    records.push((i, len, false));
                    pos += len as u64;
                    i += len;
                }
                Err(e) => return Err(corrupt(pos, e.to_string())),
            }
        }
        let write_err = |e: io::Error| AppendError::Io { op: "write log", reason: e.to_string().into() };
        // Records are written a run at a time (up to a filler or the end), then dispatched.
        let mut written_to = 0usize;
        for (k, &(i, len, filler)) in records.iter().enumerate() {
            let rec = &bytes[i..i + len];
            if i >= written_to {
                let run_end = records[k..].iter().find(|r| r.2 && r.0 > i).map_or(bytes.len(), |r| r.0);
                let run_end = if filler { i + len } else { run_end };
                // SAFETY: past the published end, under the writer lock.
                unsafe { w.active.write_through_file(w.pos - w.active_base, &bytes[i..run_end]) }.map_err(write_err)?;
                written_to = run_end;
            }
            if filler {
                let next_base = w.active_base + seg;
                let next =
                    self.take_spare(next_base).map_err(|e| AppendError::Io { op: "create segment", reason: e.to_string().into() })?;
                self.segments.write().unwrap_or_else(|e| e.into_inner()).insert(next_base, Arc::clone(&next));
                w.active = next;
                w.active_base = next_base;
                w.pos = next_base;
                self.request_spare(next_base + seg);
            } else {
                let head = record::check(rec, w.pos).map_err(|e| corrupt(w.pos, e.to_string()))?;
                let info = record::dispatch_info(head.props).map_err(|e| corrupt(w.pos, e.to_string()))?;
                let cq = self
                    .queue_or_create(head.topic, head.queue_id)
                    .map_err(|e| AppendError::Io { op: "create consume queue", reason: e.to_string().into() })?;
                let mut cq = lock(&cq);
                if head.queue_offset != cq.max() && cq.min() != cq.max() {
                    return Err(corrupt(
                        w.pos,
                        format!("queue offset {} does not follow the consume queue's {}", head.queue_offset, cq.max()),
                    ));
                }
                cq.put(head.queue_offset, CqEntry { log_offset: w.pos, size: len as u32, tag_hash: info.tag_hash })
                    .map_err(|e| corrupt(w.pos, e.to_string()))?;
                drop(cq);
                index_record(&mut lock(&self.index), head.topic, &info, w.pos)
                    .map_err(|e| AppendError::Io { op: "write index", reason: e.to_string().into() })?;
                w.last_store_ms = w.last_store_ms.max(head.store_ms);
                w.pos += len as u64;
            }
            self.end.store(w.pos, Ordering::Release);
            self.dispatched.store(w.pos, Ordering::Release);
        }
        Ok(w.pos)
    }

    fn first_store_ms(&self, base: u64) -> Option<u64> {
        self.read(base).ok().map(|m| m.store_ms)
    }

    fn enforce_retention(&self) -> io::Result<RetentionReport> {
        let seg = self.config.segment_bytes;
        let retention_ms = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let mut report = RetentionReport::default();
        // Nothing can take a new reference to a retired segment (it left `segments`), so a
        // count of 1 stays 1: released here.
        lock(&self.retired).retain(|f| Arc::strong_count(f) > 1);
        for _ in 0..RETENTION_SEGMENTS_PER_ROUND_MAX {
            let active_base = seg_base(self.end.load(Ordering::Acquire), seg);
            let (oldest, next) = {
                let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
                let mut it = segs.keys();
                match (it.next(), it.next()) {
                    (Some(&a), Some(&b)) if a < active_base => (a, b),
                    _ => break,
                }
            };
            let expired = self.first_store_ms(next).is_some_and(|t| t.saturating_add(retention_ms) <= self.clock.now_ms());
            let over_disk = match self.disk.used_ratio(&self.config.dir) {
                Ok(r) => r > self.config.retention_disk_ratio_max,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read disk usage");
                    false
                }
            };
            if !(expired || over_disk) {
                break;
            }
            self.min.store(next, Ordering::Release);
            let f = self.segments.write().unwrap_or_else(|e| e.into_inner()).remove(&oldest);
            if let Some(f) = f {
                std::fs::remove_file(f.path())?;
                tracing::info!(base = oldest, expired, over_disk, "retention deleted a segment");
                if Arc::strong_count(&f) > 1 {
                    lock(&self.retired).push(f);
                }
            }
            report.segments_deleted += 1;
        }
        report.segments_held = lock(&self.retired).len();
        let min = self.min.load(Ordering::Acquire);
        report.log_min_offset = min;
        if report.segments_deleted > 0 {
            let queues: Vec<QueueHandle> =
                self.topics.read().unwrap_or_else(|e| e.into_inner()).values().flat_map(|qs| qs.values().cloned()).collect();
            for q in queues {
                lock(&q).trim_below_log(min)?;
            }
            lock(&self.index).trim_below_log(min)?;
        }
        Ok(report)
    }

    fn run_retention(&self) {
        lower_thread_priority();
        let mut stop = lock(&self.stop);
        loop {
            // Checked before every wait: a stop signalled before this thread first waited
            // must not be slept through.
            if *stop {
                return;
            }
            stop = self.stop_cv.wait_timeout(stop, self.config.retention_check_interval).unwrap_or_else(|e| e.into_inner()).0;
            if *stop {
                return;
            }
            drop(stop);
            if let Err(e) = self.enforce_retention() {
                tracing::warn!(error = %e, "retention round failed");
            }
            stop = lock(&self.stop);
        }
    }

    fn verify(&self) -> Result<VerifyReport, ReadError> {
        let from = self.min.load(Ordering::Acquire);
        let end = self.end.load(Ordering::Acquire);
        let mut pos = from;
        let mut records = 0;
        while pos < end {
            let chunk = self.read_raw(pos, 1 << 20)?;
            let b = &chunk.bytes;
            let mut i = 0;
            while i < b.len() {
                let len = match record::peek(&b[i..], self.record_max, false) {
                    Ok(Frame::Filler { len }) => len,
                    Ok(Frame::Record { len }) => {
                        self.read(pos + i as u64)?;
                        records += 1;
                        len
                    }
                    Err(reason) => return Err(ReadError::Corrupt { offset: pos + i as u64, reason }),
                };
                i += len;
            }
            pos += b.len() as u64;
        }
        Ok(VerifyReport { records, from_offset: from, end_offset: end })
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
