//! Flushing: the group-commit flusher thread (sync flush: an fsync whenever behind, waking
//! exactly the waiters it covers), the idle-class writeback thread (async flush), checkpoints,
//! dropping the page cache of the log far behind the end, and a failed fsync stopping writes.

use super::*;

impl Inner {
    pub(super) fn on_durable(&self, end_offset: u64, done: Waiter) {
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

    pub(super) fn wait_durable(&self, end_offset: u64, timeout: Duration) -> Result<(), FlushError> {
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
    pub(super) fn flush_log(&self, target: u64) -> io::Result<()> {
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
        let started = Instant::now();
        for (base, f) in files {
            f.sync_range(from.max(base) - base, (target - base).min(seg))?;
        }
        if let Some(hook) = self.synced.get() {
            hook(started.elapsed());
        }
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Drops the cached pages of the flushed log more than `cached_bytes_behind` behind the
    /// flushed position, in steps of at least [`DROP_BEHIND_STEP`] bytes (or a segment): the pages freed are
    /// reused by the next appends while still warm.
    pub(super) fn drop_cold_caches(&self) {
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

    pub(super) fn fail(&self, what: &str, e: &io::Error) -> Arc<str> {
        let reason: Arc<str> = format!("{what} failed: {e}; writes stopped (a failed fsync is never retried)").into();
        if self.failure.set(Arc::clone(&reason)).is_ok() {
            tracing::error!(%reason, "store failed");
        }
        self.failure.get().cloned().unwrap_or(reason)
    }

    pub(super) fn run_flusher(&self) {
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
    pub(super) fn run_writeback(&self) {
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
    pub(super) fn flush_and_notify(&self, target: u64) -> usize {
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

    pub(super) fn fail_waiters(&self) {
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
    pub(super) fn checkpoint(&self) -> io::Result<()> {
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let queues: Vec<QueueHandle> =
            self.topics.read().unwrap_or_else(|e| e.into_inner()).values().flat_map(|qs| qs.values().cloned()).collect();
        for q in queues {
            let files = lock(&q).take_dirty();
            for f in files {
                f.sync()?;
            }
        }
        let files = lock(&self.index).take_dirty()?;
        for f in files {
            f.sync()?;
        }
        let ck =
            Checkpoint { log_flushed: self.flushed.load(Ordering::Acquire), dispatch_safe: dispatched, written_ms: self.clock.now_ms() };
        ck.write(&self.config.dir.join("checkpoint"))
    }
}
