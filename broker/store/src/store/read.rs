//! Reads: a record by log offset, a queue's messages (the log mapped in by chunks, each
//! once), lookups through the index, and `verify`.

use super::*;

impl Inner {
    pub(super) fn segment_for(&self, offset: u64) -> Option<(u64, Arc<LogFile>)> {
        self.segments.read().unwrap_or_else(|e| e.into_inner()).range(..=offset).next_back().map(|(&b, f)| (b, Arc::clone(f)))
    }

    pub(super) fn read(&self, log_offset: u64) -> Result<StoredMessage, ReadError> {
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

    pub(super) fn read_queue(
        &self,
        topic: &str,
        queue_id: u32,
        from: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<QueueRead, ReadError> {
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

    pub(super) fn queue_bounds_min(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id).map(|q| lock(&q).min()).unwrap_or(0)
    }

    pub(super) fn lookup(&self, hash: u64, max: usize, matches: impl Fn(&StoredMessage) -> bool) -> Result<Vec<StoredMessage>, ReadError> {
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

    pub(super) fn verify(&self) -> Result<VerifyReport, ReadError> {
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
