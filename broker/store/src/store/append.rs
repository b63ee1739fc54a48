//! The append path: batches validated and encoded outside the writer lock, then — for one batch
//! or a group of independent batches — one writer-lock section that encodes every record into
//! the scratch buffer, writes all that fit in the active segment with one `pwrite`, writes each
//! consume queue's run of entries with one `pwrite`, and publishes the new end once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Inner, QueueHandle, SCRATCH_KEEP_BYTES, Writer, index_message, lock};
use crate::config::BATCH_MESSAGES_MAX;
use crate::consume_queue::{CqEntry, PutError};
use crate::error::AppendError;
use crate::index::id_hash;
use crate::record::{self, FILLER_BYTES_MIN, MessageError, NewMessage, Placement, QUEUE_ID_LIMIT};
use crate::{Appended, AppendedMessage};

/// A batch that passed validation, with its encoded properties.
struct Checked<'a> {
    /// Index of the batch in the group.
    at: usize,
    batch: &'a [NewMessage],
    /// All properties of the batch in one buffer; message i's are `props[ranges[i]]`.
    props: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    /// Record bytes of the whole batch.
    total: u64,
}

/// One consume queue a chunk fills, with the chunk's messages for it in order
/// (`(batch in chunk, message)`).
type QueueRun = (QueueHandle, Vec<(usize, usize)>);

fn io_error(op: &'static str, what: &str, e: &io::Error) -> AppendError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        AppendError::DiskFull { what: what.into() }
    } else {
        AppendError::Io { op, reason: e.to_string().into() }
    }
}

impl Inner {
    pub(super) fn check_writable(&self, w: &Writer) -> Result<(), AppendError> {
        if w.closed {
            return Err(AppendError::Closed);
        }
        if let Some(reason) = self.failure.get() {
            return Err(AppendError::Failed { reason: Arc::clone(reason) });
        }
        Ok(())
    }

    /// Validates a batch and encodes its properties (no lock held).
    fn check<'a>(&self, at: usize, batch: &'a [NewMessage]) -> Result<Checked<'a>, AppendError> {
        if batch.is_empty() {
            return Err(AppendError::EmptyBatch);
        }
        if batch.len() > BATCH_MESSAGES_MAX {
            return Err(AppendError::TooManyMessages { n_messages: batch.len(), max: BATCH_MESSAGES_MAX });
        }
        let mut props = Vec::new();
        let mut ranges = Vec::with_capacity(batch.len());
        let mut total = 0u64;
        for (index, m) in batch.iter().enumerate() {
            let bad = |source| AppendError::Message { index, source };
            if index == 0 || batch[index - 1].topic != m.topic {
                record::validate_topic(&m.topic).map_err(bad)?;
            }
            if m.queue_id >= QUEUE_ID_LIMIT {
                return Err(bad(MessageError::QueueIdTooLarge { queue_id: m.queue_id }));
            }
            if m.body.len() > self.config.message_bytes_max as usize {
                return Err(bad(MessageError::MessageTooLarge { n_bytes: m.body.len(), max: self.config.message_bytes_max }));
            }
            let start = props.len();
            record::encode_properties(&m.properties, &mut props).map_err(bad)?;
            total += record::record_bytes(&m.topic, props.len() - start, m.body.len()) as u64;
            ranges.push(start..props.len());
        }
        let seg = self.config.segment_bytes;
        if total + FILLER_BYTES_MIN as u64 > seg {
            return Err(AppendError::BatchTooLarge { n_bytes: total, max: seg - FILLER_BYTES_MIN as u64 });
        }
        Ok(Checked { at, batch, props, ranges, total })
    }

    /// Groups a chunk's messages by consume queue (each distinct (topic, queue) resolved once)
    /// and makes the consume-queue files they will fill (creation takes milliseconds: not under
    /// the writer lock, where it would stall every append; should another append fill the
    /// queue first, the file is made under the lock as before).
    fn queue_runs(&self, chunk: &[Checked<'_>]) -> Result<Vec<QueueRun>, AppendError> {
        let mut runs: Vec<QueueRun> = Vec::new();
        let mut last: Option<usize> = None;
        for (b, c) in chunk.iter().enumerate() {
            for (i, m) in c.batch.iter().enumerate() {
                let same = |r: &usize| {
                    let (fb, fi) = runs[*r].1[0];
                    let first = &chunk[fb].batch[fi];
                    first.queue_id == m.queue_id && first.topic == m.topic
                };
                // Consecutive messages usually share a queue: try the last one's run first.
                let r = match last.filter(same).or_else(|| (0..runs.len()).find(same)) {
                    Some(r) => r,
                    None => {
                        let q = self
                            .queue_or_create(&m.topic, m.queue_id)
                            .map_err(|e| AppendError::Io { op: "create consume queue", reason: e.to_string().into() })?;
                        runs.push((q, Vec::new()));
                        runs.len() - 1
                    }
                };
                runs[r].1.push((b, i));
                last = Some(r);
            }
        }
        for (q, members) in &runs {
            lock(q).prepare(members.len()).map_err(|e| io_error("create consume-queue file", "a consume-queue file", &e))?;
        }
        Ok(runs)
    }

    pub(super) fn append(&self, batch: &[NewMessage]) -> Result<Appended, AppendError> {
        self.append_many(&[batch]).pop().unwrap_or(Err(AppendError::EmptyBatch))
    }

    /// Appends independent batches together, in order; each has its own result. A batch that
    /// fails validation fails alone; a batch lands contiguously in one segment or not at all.
    /// The batches that fit in the active segment share one `pwrite` of the log and one of
    /// each consume queue; the rest go on after a roll.
    pub(super) fn append_many(&self, batches: &[&[NewMessage]]) -> Vec<Result<Appended, AppendError>> {
        let mut results: Vec<Result<Appended, AppendError>> = Vec::with_capacity(batches.len());
        let mut checked = Vec::with_capacity(batches.len());
        for (at, b) in batches.iter().enumerate() {
            results.push(Err(AppendError::EmptyBatch));
            match self.check(at, b) {
                Ok(c) => checked.push(c),
                Err(e) => results[at] = Err(e),
            }
        }
        let mut rest = &checked[..];
        while !rest.is_empty() {
            match self.append_chunk(rest, &mut results) {
                Ok(n) => rest = &rest[n..],
                Err(e) => {
                    for c in rest {
                        results[c.at] = Err(e.clone());
                    }
                    break;
                }
            }
        }
        results
    }

    /// Appends the longest prefix of `chunk` that fits in one segment (rolling first if not even
    /// its first batch fits in the active one); returns how many batches it took.
    fn append_chunk(&self, chunk: &[Checked<'_>], results: &mut [Result<Appended, AppendError>]) -> Result<usize, AppendError> {
        let seg = self.config.segment_bytes;
        // The chunk's queues are prepared for at most what fits in a whole segment; fewer is
        // fine (a consume-queue file is then made under the lock).
        let fits = |from: u64| {
            let mut used = 0u64;
            chunk
                .iter()
                .take_while(|c| {
                    used += c.total;
                    from + used + FILLER_BYTES_MIN as u64 <= seg
                })
                .count()
        };
        let planned = fits(0).max(1);
        let runs = self.queue_runs(&chunk[..planned])?;

        let mut w = lock(&self.writer);
        self.check_writable(&w)?;
        if w.pos - w.active_base + chunk[0].total + FILLER_BYTES_MIN as u64 > seg {
            self.roll(&mut w)?;
        }
        let n = fits(w.pos - w.active_base).clamp(1, planned);
        // Fewer fit after the end of the active segment: their queues are a subset.
        let runs: Vec<QueueRun> = if n == planned {
            runs
        } else {
            runs.into_iter()
                .filter_map(|(q, members)| {
                    let members: Vec<(usize, usize)> = members.into_iter().filter(|&(b, _)| b < n).collect();
                    (!members.is_empty()).then_some((q, members))
                })
                .collect()
        };
        let chunk = &chunk[..n];
        let total: u64 = chunk.iter().map(|c| c.total).sum();
        let store_ms = self.clock.now_ms().max(w.last_store_ms);
        w.last_store_ms = store_ms;
        // Each queue's messages count on from its current end, in chunk order.
        let mut next_q: Vec<u64> = runs.iter().map(|(q, _)| lock(q).max()).collect();
        let mut queue_offsets: Vec<Vec<u64>> = chunk.iter().map(|c| vec![0; c.batch.len()]).collect();
        for (r, (_, members)) in runs.iter().enumerate() {
            for &(b, i) in members {
                queue_offsets[b][i] = next_q[r];
                next_q[r] += 1;
            }
        }
        let mut placed: Vec<Vec<AppendedMessage>> = Vec::with_capacity(n);
        let mut pos = w.pos;
        let mut scratch = std::mem::take(&mut w.scratch);
        // Every byte of [0, total) is overwritten by the encoder, so old contents need no clearing.
        if scratch.len() < total as usize {
            scratch.resize(total as usize, 0);
        }
        let mut at = 0usize;
        for (b, c) in chunk.iter().enumerate() {
            let mut out = Vec::with_capacity(c.batch.len());
            for (i, m) in c.batch.iter().enumerate() {
                let queue_offset = queue_offsets[b][i];
                let p = &c.props[c.ranges[i].clone()];
                let len = record::record_bytes(&m.topic, p.len(), m.body.len());
                record::encode_into(&mut scratch[at..at + len], m, p, Placement { log_offset: pos, queue_offset, store_ms });
                out.push(AppendedMessage { log_offset: pos, queue_offset, record_bytes: len as u32, store_ms });
                pos += len as u64;
                at += len;
            }
            placed.push(out);
        }
        // SAFETY: [w.pos, pos) lies past the published end, and we hold the writer lock.
        let written = unsafe { w.active.write_through_file(w.pos - w.active_base, &scratch[..total as usize]) };
        if let Err(e) = written {
            w.scratch = scratch;
            return Err(io_error("write log", "the log segment", &e));
        }
        if scratch.capacity() <= SCRATCH_KEEP_BYTES {
            w.scratch = scratch;
        }
        self.dispatch_chunk(chunk, &runs, &placed)
            .map_err(|e| io_error("write consume queue or index", "a consume-queue or index file", &e))?;
        w.pos = pos;
        self.end.store(pos, Ordering::Release);
        self.dispatched.store(pos, Ordering::Release);
        drop(w);
        if let Some(f) = self.appended.get() {
            f(pos);
        }
        for (c, messages) in chunk.iter().zip(placed) {
            let last = &messages[messages.len() - 1];
            let end_offset = last.log_offset + u64::from(last.record_bytes);
            results[c.at] = Ok(Appended { messages, end_offset });
        }
        Ok(n)
    }

    /// Writes a chunk's consume-queue entries (`runs`: each queue with its messages, in chunk
    /// order, whose queue offsets are consecutive) and index entries. If any fails (a full disk
    /// when a new queue or index file is needed), every entry of the chunk is taken back, so
    /// the derived data never points at records that were not published.
    fn dispatch_chunk(&self, chunk: &[Checked<'_>], runs: &[QueueRun], placed: &[Vec<AppendedMessage>]) -> io::Result<()> {
        let id_hashes: Vec<Vec<Option<u64>>> = chunk
            .iter()
            .map(|c| c.batch.iter().map(|m| m.properties.unique_id.as_deref().map(|id| id_hash(id.as_bytes()))).collect())
            .collect();
        let mut index = lock(&self.index);
        index.prefetch(id_hashes.iter().flatten().flatten().copied());
        let mut undo: Vec<(&QueueHandle, u64)> = Vec::new();
        let mut result = Ok(());
        for (q, members) in runs {
            let entries: Vec<CqEntry> = members
                .iter()
                .map(|&(b, i)| CqEntry {
                    log_offset: placed[b][i].log_offset,
                    size: placed[b][i].record_bytes,
                    tag_hash: chunk[b].batch[i].properties.tags.as_deref().map_or(0, record::tag_hash),
                })
                .collect();
            let mut cq = lock(q);
            undo.push((q, cq.max()));
            let (b, i) = members[0];
            result = cq.put_run(placed[b][i].queue_offset, &entries).map_err(|e| match e {
                PutError::Io(e) => e,
                PutError::Order(e) => io::Error::other(e),
            });
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            'index: for (b, c) in chunk.iter().enumerate() {
                for (i, m) in c.batch.iter().enumerate() {
                    result = index_message(&mut index, m, id_hashes[b][i], placed[b][i].log_offset);
                    if result.is_err() {
                        break 'index;
                    }
                }
            }
        }
        if let Err(e) = result {
            for (q, max) in undo {
                lock(q).truncate_to(max)?;
            }
            index.truncate_from_log(placed[0][0].log_offset)?;
            return Err(e);
        }
        Ok(())
    }

    /// Closes the active segment with a filler and makes the next one active.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<(), AppendError> {
        let seg = self.config.segment_bytes;
        let next_base = w.active_base + seg;
        let next = self.take_spare(next_base).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                AppendError::DiskFull { what: format!("the next {seg}-byte segment") }
            } else {
                AppendError::Io { op: "create segment", reason: e.to_string().into() }
            }
        })?;
        let rel = w.pos - w.active_base;
        // SAFETY: the filler range lies past the published end; we hold the writer lock.
        unsafe { w.active.fill_in_place(rel, (seg - rel) as usize, record::encode_filler) };
        self.segments.write().unwrap_or_else(|e| e.into_inner()).insert(next_base, Arc::clone(&next));
        w.active = next;
        w.active_base = next_base;
        w.pos = next_base;
        self.end.store(next_base, Ordering::Release);
        self.dispatched.store(next_base, Ordering::Release);
        self.request_spare(next_base + seg);
        Ok(())
    }
}
