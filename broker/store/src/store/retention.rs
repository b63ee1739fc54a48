//! Retention: whole segments past the age or disk-use limit deleted by the retention thread
//! (a segment a reader still maps is released by a later round).

use super::*;

impl Inner {
    pub(super) fn first_store_ms(&self, base: u64) -> Option<u64> {
        self.read(base).ok().map(|m| m.store_ms)
    }

    pub(super) fn enforce_retention(&self) -> io::Result<RetentionReport> {
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

    pub(super) fn run_retention(&self) {
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
}
