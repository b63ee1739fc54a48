//! Replica I/O: a master's log read as raw bytes, and a slave appending them as they are
//! (every record verified, consume queues and index built as for its own appends).

use super::*;

impl Inner {
    pub(super) fn read_raw(&self, from: u64, max_bytes: usize) -> Result<RawChunk, ReadError> {
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

    pub(super) fn append_raw(&self, at: u64, bytes: &[u8]) -> Result<u64, ReplicaError> {
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
}
