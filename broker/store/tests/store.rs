//! The store through its public API: appends and reads (property-tested with tiny segments so
//! roll-over happens often), batches, limits, the index, clean reopen, simulated crash with a
//! torn tail, corruption inside the checkpointed region, retention, group commit and
//! replication. Process-level SIGKILL tests live in the workspace's `tests/` crate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use wasmq_store::{
    AppendError, DiskProbe, FlushMode, ManualClock, MessageError, NewMessage, OpenError, Properties, ReadError, ReplicaError, Store,
    StoreConfig, tag_hash,
};

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::small_for_tests(dir)
}

fn message(topic: &str, queue_id: u32, body: Vec<u8>, id: String) -> NewMessage {
    NewMessage {
        topic: topic.into(),
        queue_id,
        born_ms: 7,
        flags: 3,
        properties: Properties {
            tags: Some(format!("tag{}", body.len() % 3)),
            keys: vec![format!("k-{id}")],
            unique_id: Some(id),
            ..Default::default()
        },
        body: Bytes::from(body),
    }
}

/// Everything appended, as the test remembers it.
#[derive(Default)]
struct Model {
    by_log: Vec<(u64, NewMessage)>,
    queues: HashMap<(String, u32), Vec<u64>>,
}

impl Model {
    fn check(&self, store: &Store) {
        for (log_offset, m) in &self.by_log {
            let got = store.read(*log_offset).unwrap_or_else(|e| panic!("read {log_offset}: {e}"));
            assert_eq!(got.topic, m.topic);
            assert_eq!(got.queue_id, m.queue_id);
            assert_eq!(got.body, m.body);
            assert_eq!(got.properties, m.properties);
        }
        let by_offset: HashMap<u64, &NewMessage> = self.by_log.iter().map(|(o, m)| (*o, m)).collect();
        for ((topic, queue_id), offsets) in &self.queues {
            assert_eq!(store.queue_bounds(topic, *queue_id), (0, offsets.len() as u64));
            let mut from = 0;
            while from < offsets.len() as u64 {
                let read = store.read_queue(topic, *queue_id, from, 7, 200_000).unwrap();
                assert!(!read.messages.is_empty());
                for (i, m) in read.messages.iter().enumerate() {
                    let q = from + i as u64;
                    assert_eq!(m.queue_offset, q);
                    assert_eq!(m.log_offset, offsets[q as usize]);
                    assert_eq!(m.body, by_offset[&m.log_offset].body);
                }
                from = read.next_offset;
            }
            let entries = store.queue_entries(topic, *queue_id, 0, usize::MAX).unwrap();
            assert_eq!(entries.iter().map(|e| e.log_offset).collect::<Vec<_>>(), *offsets);
            for e in entries {
                let tags = by_offset[&e.log_offset].properties.tags.as_deref().unwrap();
                assert_eq!(e.tag_hash, tag_hash(tags));
            }
        }
    }
}

fn append_into(store: &Store, model: &mut Model, batch: Vec<NewMessage>) {
    let appended = store.append(&batch).unwrap();
    let mut at = appended.messages[0].log_offset;
    for (m, a) in batch.into_iter().zip(appended.messages) {
        assert_eq!(a.log_offset, at, "a batch is contiguous");
        at += u64::from(a.record_bytes);
        let q = model.queues.entry((m.topic.clone(), m.queue_id)).or_default();
        assert_eq!(a.queue_offset, q.len() as u64, "queue offsets are dense");
        q.push(a.log_offset);
        model.by_log.push((a.log_offset, m));
    }
    assert_eq!(at, appended.end_offset);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random appends of 0–64 KiB bodies over many queues, with 1 MiB segments and 64-entry
    /// consume-queue files; a clean reopen halfway; everything read back both ways.
    #[test]
    fn random_appends_read_back_by_queue_and_log_offset(
        ops in proptest::collection::vec(
            (0usize..5, 0u32..4, 0usize..=64 * 1024, 1usize..4, any::<u8>()), 1..60),
        reopen_at in 0usize..60,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(config(dir.path())).unwrap();
        let mut model = Model::default();
        for (n, (topic, queue, size, batch_len, fill)) in ops.into_iter().enumerate() {
            if n == reopen_at {
                store.close().unwrap();
                let (s, report) = Store::open(config(dir.path())).unwrap();
                prop_assert!(!report.crashed);
                model.check(&s);
                store = s;
            }
            let batch = (0..batch_len)
                .map(|b| message(&format!("topic{topic}"), queue, vec![fill; size / batch_len], format!("id-{n}-{b}")))
                .collect();
            append_into(&store, &mut model, batch);
        }
        model.check(&store);
        let verified = store.verify().unwrap();
        prop_assert_eq!(verified.records, model.by_log.len() as u64);
        store.close().unwrap();
        let (store, _) = Store::open(config(dir.path())).unwrap();
        model.check(&store);
    }
}

#[test]
fn index_finds_by_unique_id_and_key_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    for i in 0..500 {
        let mut m = message("orders", i % 4, vec![1; 300], format!("id-{i}"));
        m.properties.keys.push(format!("customer-{}", i % 10));
        store.append(&[m]).unwrap();
    }
    let found = store.find_by_id("id-123").unwrap().expect("found");
    assert_eq!(found.properties.unique_id.as_deref(), Some("id-123"));
    assert_eq!(store.find_by_id("id-nope").unwrap(), None);
    let by_key = store.find_by_key("orders", "customer-3", 1000).unwrap();
    assert_eq!(by_key.len(), 50);
    assert!(by_key.windows(2).all(|w| w[0].log_offset > w[1].log_offset), "newest first");
    assert!(store.find_by_key("other", "customer-3", 10).unwrap().is_empty(), "keys are per topic");
    store.close().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.find_by_key("orders", "customer-3", 1000).unwrap().len(), 50);
    assert!(store.find_by_id("id-499").unwrap().is_some());
}

#[test]
fn bad_input_is_rejected_with_a_clear_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let ok = message("t", 0, vec![0; 10], "a".into());
    let too_big = message("t", 0, vec![0; 256 * 1024 + 1], "b".into());
    let end = store.end_offset();
    match store.append(&[ok.clone(), too_big]) {
        Err(AppendError::Message { index: 1, source: MessageError::MessageTooLarge { n_bytes: 262_145, max: 262_144 } }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.end_offset(), end, "nothing of the batch stored");
    assert!(matches!(store.append(&[]), Err(AppendError::EmptyBatch)));
    let bad_topic = NewMessage { topic: "../etc".into(), ..ok.clone() };
    assert!(matches!(store.append(&[bad_topic]), Err(AppendError::Message { source: MessageError::InvalidTopic { .. }, .. })));
    let bad_queue = NewMessage { queue_id: 1 << 20, ..ok.clone() };
    assert!(matches!(store.append(&[bad_queue]), Err(AppendError::Message { source: MessageError::QueueIdTooLarge { .. }, .. })));
    let big_batch = vec![message("t", 0, vec![0; 200 * 1024], "c".into()); 6];
    assert!(matches!(store.append(&big_batch), Err(AppendError::BatchTooLarge { .. })));
    assert_eq!(store.end_offset(), end);
    assert!(matches!(store.read(end + 5), Err(ReadError::BeyondEnd { .. })));
    let a = store.append(&[ok]).unwrap();
    assert!(matches!(store.read(a.messages[0].log_offset + 1), Err(ReadError::Corrupt { .. } | ReadError::NotARecord { .. })));

    let mut cfg = config(dir.path());
    cfg.segment_bytes = 12345;
    match Store::open(cfg) {
        Err(OpenError::Config(e)) => assert_eq!(e.key, "segment_bytes"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Store::open(config(dir.path())), Err(OpenError::Locked { .. })), "a second store on the same directory");
}

fn append_some(store: &Store, n: u32, size: usize) -> Vec<(u64, u64)> {
    (0..n)
        .map(|i| {
            let a = store.append(&[message("t", i % 3, vec![i as u8; size], format!("m{i}"))]).unwrap();
            (a.messages[0].log_offset, a.end_offset)
        })
        .collect()
}

/// A crash (abort marker left behind) with garbage past the durable end: recovery cuts the
/// garbage, keeps every durable record, and the log goes on from a record boundary.
#[test]
fn torn_tail_past_the_durable_offset_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let written = append_some(&store, 30, 20_000);
    let end = store.end_offset();
    store.close().unwrap();
    // Simulate a crash whose unflushed tail reached the disk half-written.
    std::fs::write(dir.path().join("abort"), b"").unwrap();
    let seg = 1u64 << 20;
    let path = dir.path().join("commitlog").join(format!("{:020}", end / seg * seg));
    let mut bytes = std::fs::read(&path).unwrap();
    let rel = (end % seg) as usize;
    bytes[rel..rel + 4].copy_from_slice(&5000u32.to_le_bytes());
    bytes[rel + 4..rel + 8].copy_from_slice(&0x0157_514Du32.to_le_bytes());
    for (i, b) in bytes[rel + 8..rel + 5000].iter_mut().enumerate() {
        *b = (i * 31) as u8;
    }
    std::fs::write(&path, bytes).unwrap();

    let (store, report) = Store::open(config(dir.path())).unwrap();
    assert!(report.crashed);
    assert_eq!(report.truncated_at, Some(end));
    assert_eq!(store.end_offset(), end);
    for (o, _) in &written {
        store.read(*o).unwrap();
    }
    assert_eq!(store.queue_bounds("t", 0), (0, 10));
    let more = append_some(&store, 5, 100);
    assert_eq!(more[0].0, end, "the log goes on where the good records end");
    store.close().unwrap();
    let (store, report) = Store::open(config(dir.path())).unwrap();
    assert!(!report.crashed);
    assert_eq!(store.verify().unwrap().records, 35);
}

/// A flipped bit inside the checkpointed region is reported, never silently cut off.
#[test]
fn corruption_inside_the_checkpointed_region_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let written = append_some(&store, 10, 1000);
    store.close().unwrap();
    let victim = written[4].0;
    let path = dir.path().join("commitlog").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim as usize + 300] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    // After a clean stop the damage is found by reads and by verify.
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert!(matches!(store.read(victim), Err(ReadError::Corrupt { offset, .. }) if offset == victim));
    assert!(matches!(store.verify(), Err(ReadError::Corrupt { offset, .. }) if offset == victim));
    let read = store.read_queue("t", 1, 0, 10, 1 << 20);
    assert!(matches!(read, Err(ReadError::Corrupt { offset, .. }) if offset == victim), "a queue read never skips past it");
    store.close().unwrap();

    // After a crash, recovery refuses to open rather than truncate acknowledged data.
    std::fs::write(dir.path().join("abort"), b"").unwrap();
    match Store::open(config(dir.path())) {
        Err(OpenError::CorruptCommitted { offset, .. }) => assert_eq!(offset, victim),
        other => panic!("expected CorruptCommitted, got {other:?}"),
    }
}

#[derive(Debug, Default)]
struct FakeDisk(std::sync::Mutex<f64>);

impl DiskProbe for FakeDisk {
    fn used_ratio(&self, _: &std::path::Path) -> std::io::Result<f64> {
        Ok(*self.0.lock().unwrap())
    }
}

#[test]
fn retention_deletes_old_segments_by_age_and_by_disk_usage() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let disk = Arc::new(FakeDisk::default());
    let mut cfg = config(dir.path());
    cfg.retention = Duration::from_secs(3600);
    let (store, _) = Store::open_with(cfg.clone(), clock.clone(), disk.clone()).unwrap();
    let old = append_some(&store, 100, 30_000); // about 3 segments
    clock.advance_ms(1800 * 1000);
    let young = append_some(&store, 100, 30_000);
    let segments = || std::fs::read_dir(dir.path().join("commitlog")).unwrap().count();
    let before = segments();
    assert!(before >= 6, "{before} segments");

    assert_eq!(store.enforce_retention().unwrap().segments_deleted, 0, "nothing is an hour old yet");
    clock.advance_ms(1801 * 1000);
    let report = store.enforce_retention().unwrap();
    assert!(report.segments_deleted >= 2, "{report:?}");
    assert!(report.log_min_offset <= young[0].0, "young messages kept");
    assert!(matches!(store.read(old[0].0), Err(ReadError::Trimmed { .. })));
    for (o, _) in &young {
        store.read(*o).unwrap();
    }
    let (min0, max0) = store.queue_bounds("t", 0);
    assert!(min0 > 0 && max0 == 68, "queue minimum moved with the log: {min0}..{max0}");
    assert!(matches!(store.read_queue("t", 0, 0, 1, 1000), Err(ReadError::Trimmed { min, .. }) if min == min0));
    assert_eq!(store.read_queue("t", 0, min0, 1, 1000).unwrap().messages[0].queue_offset, min0);

    *disk.0.lock().unwrap() = 0.9;
    let report = store.enforce_retention().unwrap();
    assert!(report.segments_deleted >= 1);
    assert_eq!(segments(), 1 + 1, "all but the active segment (and the preallocated next) deleted under disk pressure");
    store.close().unwrap();
    let (store, _) = Store::open_with(cfg, clock, Arc::new(FakeDisk::default())).unwrap();
    assert_eq!(store.queue_bounds("t", 0).1, 68, "queue offsets continue after a reopen");
    assert_eq!(store.append(&[message("t", 0, vec![1], "z".into())]).unwrap().messages[0].queue_offset, 68);
}

#[test]
fn sync_flush_group_commit_makes_every_ack_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush = FlushMode::Sync { timeout: Duration::from_secs(10) };
    let (store, _) = Store::open(cfg).unwrap();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let a = store.append_durable(&[message("t", t, vec![i; 500], format!("{t}-{i}"))]).unwrap();
                    assert!(store.durable_offset() >= a.end_offset, "acknowledged before durable");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.verify().unwrap().records, 400);
}

#[test]
fn async_flush_makes_bytes_durable_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush = FlushMode::Async { interval: Duration::from_millis(50) };
    let (store, _) = Store::open(cfg).unwrap();
    let a = store.append_durable(&[message("t", 0, vec![1; 10], "x".into())]).unwrap();
    store.wait_durable(a.end_offset, Duration::from_secs(5)).unwrap();
    assert!(store.durable_offset() >= a.end_offset);
}

#[test]
fn replication_copies_the_log_byte_for_byte_and_rejects_damage() {
    let (dm, ds) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, _) = Store::open(config(dm.path())).unwrap();
    let (slave, _) = Store::open(config(ds.path())).unwrap();
    let written = append_some(&master, 120, 25_000); // several segments
    let mut at = 0;
    while at < master.end_offset() {
        let chunk = master.read_raw(at, 64 * 1024).unwrap();
        assert!(!chunk.bytes.is_empty());
        if at == 0 {
            let mut damaged = chunk.bytes.to_vec();
            damaged[100] ^= 1;
            assert!(matches!(slave.append_raw(0, &damaged), Err(ReplicaError::Corrupt { offset: 0, .. })));
            assert_eq!(slave.end_offset(), 0, "nothing stored");
            assert!(matches!(slave.append_raw(8, &chunk.bytes), Err(ReplicaError::OffsetMismatch { expected: 0, got: 8 })));
        }
        at = slave.append_raw(at, &chunk.bytes).unwrap();
    }
    assert_eq!(slave.end_offset(), master.end_offset());
    for (o, _) in &written {
        assert_eq!(slave.read(*o).unwrap().record, master.read(*o).unwrap().record);
    }
    for q in 0..3 {
        assert_eq!(slave.queue_bounds("t", q), master.queue_bounds("t", q));
    }
    assert!(slave.find_by_id("m77").unwrap().is_some(), "the slave indexes what it receives");
    assert!(master.read_raw(master.end_offset(), 1024).unwrap().bytes.is_empty());
}

/// Consume queues and index are derived data: deleting them (an operator forcing a rebuild)
/// loses nothing.
#[test]
fn consume_queues_and_index_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let written = append_some(&store, 120, 20_000);
    let bounds: Vec<_> = (0..3).map(|q| store.queue_bounds("t", q)).collect();
    store.close().unwrap();
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (store, report) = Store::open(config(dir.path())).unwrap();
    assert_eq!(report.records_recovered, 120);
    assert_eq!((0..3).map(|q| store.queue_bounds("t", q)).collect::<Vec<_>>(), bounds);
    for (i, (o, _)) in written.iter().enumerate() {
        let q = store.read_queue("t", i as u32 % 3, i as u64 / 3, 1, usize::MAX).unwrap();
        assert_eq!(q.messages[0].log_offset, *o);
    }
    assert_eq!(store.find_by_id("m57").unwrap().unwrap().log_offset, written[57].0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// No input makes the store panic: reads at arbitrary offsets and replicated bytes that are
    /// garbage, truncated or bit-flipped copies of real records get errors.
    #[test]
    fn arbitrary_offsets_and_replica_bytes_never_panic(
        offsets in proptest::collection::vec(any::<u64>(), 1..20),
        garbage in proptest::collection::vec(any::<u8>(), 0..3000),
        cut in any::<proptest::sample::Index>(),
        flip in any::<proptest::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(config(dir.path())).unwrap();
        let written = append_some(&store, 5, 700);
        let end = store.end_offset();
        for o in offsets {
            let _ = store.read(o % (end + 10));
            let _ = store.read_raw(o % (end + 10), 4096);
            let _ = store.read_queue("t", (o % 4) as u32, o % 10, 3, 10_000);
        }
        let slave_dir = tempfile::tempdir().unwrap();
        let (slave, _) = Store::open(config(slave_dir.path())).unwrap();
        prop_assert!(slave.append_raw(0, &garbage).is_err() || garbage.is_empty());
        let real = store.read_raw(0, 1 << 20).unwrap().bytes;
        let cut = cut.index(real.len());
        let mut flipped = real.to_vec();
        let bit = flip.index(flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        let _ = slave.append_raw(0, &flipped);
        let _ = slave.append_raw(slave.end_offset(), &real[cut..]);
        slave.verify().unwrap();
        for (o, _) in &written {
            store.read(*o).unwrap();
        }
    }
}

/// A topic removed and created again under the same name starts empty, and recovery after a
/// crash does not pour the old topic's records into the new one.
#[test]
fn a_removed_topic_stays_removed_through_crash_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    append_some(&store, 9, 100);
    store.remove_topic("t").unwrap();
    assert_eq!(store.queue_bounds("t", 0), (0, 0));
    let again = store.append(&[message("t", 0, vec![9; 10], "new".into())]).unwrap();
    assert_eq!(again.messages[0].queue_offset, 0, "the new topic starts at offset 0");
    store.close().unwrap();
    std::fs::write(dir.path().join("abort"), b"").unwrap();
    let (store, report) = Store::open(config(dir.path())).unwrap();
    assert!(report.crashed);
    assert_eq!(store.queue_bounds("t", 0), (0, 1));
    assert_eq!(store.read_queue("t", 0, 0, 10, 1 << 20).unwrap().messages[0].body, vec![9u8; 10]);
}

/// Dropping old segments' cached pages loses nothing: every message reads back intact, from
/// the file, after its segment's pages were dropped.
#[test]
fn dropping_cold_segment_pages_keeps_every_message_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush = FlushMode::Async { interval: Duration::from_millis(5) };
    cfg.cached_bytes_behind = Some(0);
    let (store, _) = Store::open(cfg).unwrap();
    let written = append_some(&store, 300, 30_000); // about 9 segments
    store.wait_durable(store.end_offset(), Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // a few flush rounds drop the cold segments
    for (i, (o, _)) in written.iter().enumerate() {
        let m = store.read(*o).unwrap();
        assert_eq!(m.body, vec![i as u8; 30_000]);
    }
    assert_eq!(store.verify().unwrap().records, 300);
}

/// A segment retention deletes while a reader still holds a message from it stays readable
/// through that message; retention releases it on a later round, once the reader is done.
#[test]
fn a_deleted_segment_a_reader_still_holds_is_released_by_a_later_retention_round() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FakeDisk::default());
    let (store, _) = Store::open_with(config(dir.path()), Arc::new(ManualClock::new(1_000_000)), disk.clone()).unwrap();
    let written = append_some(&store, 100, 30_000); // about 3 segments
    // Flushed first, so no flush is holding a segment while retention looks.
    store.wait_durable(written.last().unwrap().1, Duration::from_secs(10)).unwrap();
    let first = dir.path().join("commitlog").join(format!("{:020}", 0));
    assert!(first.exists(), "{}", first.display());
    // A message of the first segment whose bytes are not zeros (message i's body is all i), so a
    // view onto a mapping that was dropped or zeroed cannot pass for it.
    let (at, _) = written[7];
    assert!(at + 30_000 < 1 << 20, "message 7 lies in the first segment");
    let held = store.read(at).unwrap();
    let body = held.body.clone();
    drop(held);
    *disk.0.lock().unwrap() = 0.9;
    let report = store.enforce_retention().unwrap();
    assert!(report.segments_deleted >= 2, "{report:?}");
    assert_eq!(report.segments_held, 1, "only the first segment is still mapped by a reader: {report:?}");
    assert!(matches!(store.read(at), Err(ReadError::Trimmed { .. })));
    assert!(!first.exists(), "the file is gone from the directory");
    assert_eq!(body.len(), 30_000);
    assert!(body.iter().all(|b| *b == 7), "the reader's view still reads the message");
    drop(body);
    let report = store.enforce_retention().unwrap();
    assert_eq!(report.segments_held, 0, "released once the reader let go: {report:?}");
    store.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Appends over several 1 MiB segments with master epochs begun along the way, then the
    /// store opened with its log cut at a random record boundary (what a broker rejoining a new
    /// master does): everything below stays readable by queue, log offset, id and key;
    /// nothing past it is found; epochs begun at or past the cut are gone; appends go on from
    /// the cut with dense queue offsets; a later plain reopen agrees. A cut inside a record is
    /// refused, naming the record, and leaves the store as it was.
    #[test]
    fn a_log_cut_at_a_record_boundary_removes_exactly_what_follows(
        sizes in proptest::collection::vec(0usize..40_000, 20..80),
        epoch_every in 5usize..20,
        cut_pick in any::<prop::sample::Index>(),
        crash in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(config(dir.path())).unwrap();
        let mut model = Model::default();
        let mut epochs = Vec::new();
        for (n, size) in sizes.iter().enumerate() {
            if n % epoch_every == 0 {
                let epoch = epochs.len() as u64 + 1;
                epochs.push((epoch, store.begin_epoch(epoch).unwrap()));
            }
            append_into(&store, &mut model, vec![message("t", (n % 3) as u32, vec![n as u8; *size], format!("id-{n}"))]);
        }
        prop_assert_eq!(store.epochs().list().iter().map(|e| (e.epoch, e.start)).collect::<Vec<_>>(), epochs.clone());
        let (cut, _) = model.by_log[cut_pick.index(model.by_log.len())].clone();
        let first = model.by_log[0].0;
        store.close().unwrap();
        if crash {
            std::fs::write(dir.path().join("abort"), b"").unwrap();
        }

        // Inside a record: refused, nothing changed.
        let mut inside = config(dir.path());
        inside.cut_log_at = Some(cut + 1);
        match Store::open(inside) {
            Err(OpenError::CutInsideRecord { at, record }) => {
                prop_assert_eq!((at, record), (cut + 1, cut));
            }
            other => panic!("a cut inside a record: {:?}", other.map(|(_, r)| r)),
        }
        let (store, _) = Store::open(config(dir.path())).unwrap();
        model.check(&store);
        store.close().unwrap();

        let mut cutting = config(dir.path());
        cutting.cut_log_at = Some(cut);
        let (store, report) = Store::open(cutting).unwrap();
        prop_assert_eq!(report.cut_at, Some(cut));
        prop_assert_eq!(store.end_offset(), cut);
        let gone: Vec<String> =
            model.by_log.iter().filter(|(o, _)| *o >= cut).map(|(_, m)| m.properties.unique_id.clone().unwrap()).collect();
        model.by_log.retain(|(o, _)| *o < cut);
        for offsets in model.queues.values_mut() {
            offsets.retain(|o| *o < cut);
        }
        model.check(&store);
        for id in &gone {
            prop_assert!(store.find_by_id(id).unwrap().is_none(), "{} is past the cut", id);
            let key = format!("k-{id}");
            prop_assert!(store.find_by_key("t", &key, 10).unwrap().is_empty());
        }
        let kept: Vec<(u64, u64)> = epochs.iter().copied().filter(|(_, start)| *start < cut).collect();
        prop_assert_eq!(store.epochs().list().iter().map(|e| (e.epoch, e.start)).collect::<Vec<_>>(), kept.clone());
        prop_assert!(first <= cut);
        // The log goes on from the cut; queue offsets stay dense (append_into checks them).
        append_into(&store, &mut model, vec![message("t", 0, vec![9; 500], "after-cut".into())]);
        prop_assert_eq!(model.by_log.last().unwrap().0, cut);
        let next = kept.last().map_or(1, |(e, _)| e + 1);
        prop_assert_eq!(store.begin_epoch(next).unwrap(), store.end_offset());
        store.close().unwrap();
        let (store, report) = Store::open(config(dir.path())).unwrap();
        prop_assert!(!report.crashed);
        model.check(&store);
        prop_assert_eq!(store.verify().unwrap().records, model.by_log.len() as u64);
        prop_assert_eq!(store.epochs().latest(), next);
    }
}
