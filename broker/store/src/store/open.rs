//! Opening a store: the lock file, the segments found, recovery from the checkpoint (each
//! record checked by length, magic and CRC; a torn tail past the durable offset truncated),
//! the consume queues and index trimmed and rebuilt to the verified log, and the threads.

use super::*;

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
        // A cut is recovered as after a crash: from a segment start, every record checked.
        let cut = config.cut_log_at;
        let rescan = crashed || cut.is_some();
        let epochs_path = dir.join(EPOCHS_FILE);
        let mut epochs = match std::fs::read_to_string(&epochs_path) {
            Ok(text) => Epochs::parse(&text).map_err(|reason| OpenError::Epochs { path: epochs_path.clone(), reason })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Epochs::default(),
            Err(e) => return Err(OpenError::Io { op: "read", path: epochs_path, source: e }),
        };
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
        if let Some(c) = cut {
            start = start.min(c);
        }
        if rescan {
            start = seg_base(start, seg);
        }
        let last_base = *segments.keys().next_back().expect("non-empty");
        let start = start.clamp(first_base, last_base + seg);
        let durable = if checkpoint.is_some() { ck.log_flushed } else { 0 };
        // Below the cut everything stays; past it nothing counts as durable.
        let durable = cut.map_or(durable, |c| durable.min(c));

        if let Some(c) = cut {
            // Refuse a cut inside a record before anything is touched; then no later crash may
            // trust what lies past the cut: the checkpoint comes down to it first.
            check_cut(&segments, seg, c)?;
            if let Some(ck) = checkpoint.filter(|ck| ck.log_flushed > c || ck.dispatch_safe > c) {
                let lowered = Checkpoint { log_flushed: ck.log_flushed.min(c), dispatch_safe: ck.dispatch_safe.min(c), ..ck };
                lowered.write(&ckpt_path).map_err(io_err("write checkpoint", &ckpt_path))?;
            }
        }

        // Trim derived data to what lies below the scan start.
        for (topic, queues) in &mut topics {
            for (&queue_id, cq) in queues.iter_mut() {
                let is_real = |q: u64, e: &CqEntry| record_matches(&segments, seg, e.log_offset, e.size, topic, queue_id, q);
                cq.truncate_from_log(start, is_real).map_err(io_err("truncate consume queue", &cq_dir))?;
            }
        }
        index.truncate_from_log(start).map_err(io_err("truncate index", &index_dir))?;
        if rescan {
            index.rebuild_slots().map_err(io_err("rebuild the index's slots", &index_dir))?;
        }

        // Scan, verify and re-dispatch.
        let mut pos = start;
        let mut records_recovered = 0u64;
        let mut bad: Option<(u64, String)> = None;
        // Where the last record looked at began (to name it when a cut falls inside it).
        let mut last_record = pos;
        'segments: while pos < last_base + seg {
            let base = seg_base(pos, seg);
            let Some(file) = segments.get(&base) else { break };
            let mut mapped_to = 0;
            loop {
                if let Some(c) = cut {
                    if pos == c {
                        break 'segments;
                    }
                    if pos > c {
                        return Err(OpenError::CutInsideRecord { at: c, record: last_record });
                    }
                }
                last_record = pos;
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
        let cut_at = cut.filter(|c| *c == end);
        if let Some(c) = cut_at {
            tracing::warn!(offset = c, "cutting the commit log as asked: what followed is removed");
        }
        // Epochs begun past the end are gone with the log there (a torn tail); a cut also
        // removes the one begun exactly at it (the master the log is cut for never had it).
        let before = epochs.clone();
        epochs.truncate(if cut_at.is_some() { end } else { end.saturating_add(1) });
        if epochs != before {
            crate::journal::replace_file(&epochs_path, epochs.encode().as_bytes()).map_err(io_err("write", &epochs_path))?;
        }
        let end_base = seg_base(end, seg);
        if (rescan || truncated_at.is_some())
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
            epochs: Mutex::new(epochs),
            appended: OnceLock::new(),
            synced: OnceLock::new(),
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

        let report = RecoveryReport {
            crashed,
            scanned_from: start,
            records_recovered,
            truncated_at,
            cut_at,
            end_offset: end,
            elapsed: started.elapsed(),
        };
        if crashed {
            tracing::info!(?report, "store recovered after an unclean shutdown");
        }
        Ok((Self { inner, threads: Mutex::new(threads) }, report))
    }
}

/// Walks the records of the segment holding `cut` from its start: a cut must fall where a
/// record begins, or past the last one (then nothing is cut).
fn check_cut(segments: &BTreeMap<u64, Arc<LogFile>>, seg: u64, cut: u64) -> Result<(), OpenError> {
    let base = seg_base(cut, seg);
    let Some(file) = segments.get(&base) else { return Ok(()) };
    let (mut pos, mut record) = (base, base);
    while pos < cut {
        let rel = pos - base;
        // SAFETY: nothing else has the store yet; the file is ours alone.
        let rest = unsafe { file.slice(rel, (seg - rel) as usize) };
        record = pos;
        match record::peek(rest, (seg - rel) as usize - FILLER_BYTES_MIN, true) {
            Ok(Frame::Filler { len } | Frame::Record { len }) => pos += len as u64,
            // The log ends (or is damaged, which the scan reports) before the cut.
            Err(_) => return Ok(()),
        }
    }
    if pos == cut { Ok(()) } else { Err(OpenError::CutInsideRecord { at: cut, record }) }
}
