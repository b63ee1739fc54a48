//! Segment allocation: the allocator thread makes the next segment (preallocated, optionally
//! pre-touched) before the writer needs it.

use super::*;

impl Inner {
    pub(super) fn segment_path(&self, base: u64) -> PathBuf {
        self.config.dir.join("commitlog").join(file_name(base))
    }

    pub(super) fn take_spare(&self, base: u64) -> io::Result<Arc<LogFile>> {
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

    pub(super) fn request_spare(&self, base: u64) {
        let mut a = lock(&self.alloc);
        a.want = Some(base);
        self.alloc_cv.notify_all();
    }

    /// Faults in `file`'s pages from `from` to its end, a step at a time, until stopped.
    pub(super) fn populate(&self, file: &LogFile, from: u64) {
        let mut at = from;
        while at < file.len() && !lock(&self.alloc).stop {
            file.populate_to(at, at + POPULATE_STEP_BYTES);
            at += POPULATE_STEP_BYTES;
        }
    }

    /// The allocator thread: faults in the rest of the active segment after open, then keeps
    /// the next segment created and faulted in before the writer needs it.
    pub(super) fn run_allocator(&self) {
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
}
