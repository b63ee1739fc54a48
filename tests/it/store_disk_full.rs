//! A full disk is a clean error, never a SIGBUS, and writes resume once space is freed — on the
//! running store and broker (reliability test 20a, adapted).
//!
//! Each test mounts a small tmpfs. Writing into a mapped page of a sparse file on a full file
//! system kills the process with SIGBUS (measured on this machine kind); because the store
//! preallocates every file, it must instead answer `DiskFull` — for the next segment, a new
//! consume-queue file, a new index file — keep serving reads, lose nothing, and accept writes
//! again once space is freed, without a restart. If the process survives, no SIGBUS happened.
//!
//! Needs root (it mounts a tmpfs), as CI has. `WASMQ_SKIP_ROOT_TESTS=1` skips it elsewhere;
//! with `CI` set it fails instead of skipping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use wasmq_client::{ErrorCode, OutgoingMessage, Producer, PullConsumer};
use wasmq_store::{AppendError, NewMessage, Properties, Store, StoreConfig};
use wasmq_tests::broker::Broker;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A tmpfs of `mib` MiB on a fresh directory; `None` when root tests are skipped here.
fn tmpfs(dir: &Path, mib: u32) -> Option<Mount> {
    if std::env::var_os("WASMQ_SKIP_ROOT_TESTS").is_some() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the disk-full tests, but WASMQ_SKIP_ROOT_TESTS is set");
        eprintln!("skipped: WASMQ_SKIP_ROOT_TESTS is set");
        return None;
    }
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(dir).status().expect("run mount");
    assert!(status.success(), "mounting a tmpfs failed: this test needs root (set WASMQ_SKIP_ROOT_TESTS=1 to skip it outside CI)");
    Some(Mount(dir.to_owned()))
}

/// Fills what is left of the file system holding `path` with a file there, 4 KiB at a time,
/// until the file system refuses; returns its size.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0xAAu8; 4096];
    let mut n = 0;
    while f.write_all(&block).is_ok() {
        n += block.len() as u64;
    }
    n
}

fn free_bytes(path: &Path) -> u64 {
    wasmq_store::disk_space(path).expect("statvfs").available_bytes
}

#[test]
fn full_disk_is_a_clean_error_and_writes_resume_on_the_live_store() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = tmpfs(dir.path(), 6) else { return };
    let data = dir.path().join("store");
    let mut config = StoreConfig::small_for_tests(&data);
    config.retention_disk_ratio_max = 1.0; // retention must not free space behind the test's back
    config.index_entries_per_file = 2; // a new index file every other indexed message
    let (store, _) = Store::open(config.clone()).unwrap();
    let body = Bytes::from(vec![7u8; 100 * 1024]);
    let message = |topic: &str, q: u32, id: Option<String>| NewMessage {
        topic: topic.into(),
        queue_id: q,
        body: body.clone(),
        properties: Properties { unique_id: id, ..Properties::default() },
        ..NewMessage::default()
    };
    // Space held back, to be freed later while the store runs.
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();

    // The log: full at the roll to the next segment.
    let mut stored = Vec::new();
    let full = loop {
        match store.append(&[message("full", stored.len() as u32 % 2, None)]) {
            Ok(a) => stored.push(a.messages[0].log_offset),
            Err(e) => break e,
        }
        assert!(stored.len() < 200, "a 6 MiB file system cannot hold 20 MiB");
    };
    assert!(
        matches!(&full, AppendError::DiskFull { what } if what.contains("segment")),
        "expected DiskFull naming the segment, got {full:?}"
    );
    assert!(stored.len() >= 10, "only {} messages stored before the disk filled", stored.len());
    for o in &stored {
        assert_eq!(store.read(*o).unwrap().body, body, "reads go on while the disk is full");
    }

    // The rest of the file system too: a small message still fits in the active segment, but
    // a new queue's consume-queue file and a new index file do not.
    let small = |topic: &str, q: u32, id: Option<String>| NewMessage { body: Bytes::from_static(b"small"), ..message(topic, q, id) };
    let filler = dir.path().join("filler");
    fill(&filler);
    let end_before = store.end_offset();
    let e = store.append(&[small("fresh", 0, None)]).unwrap_err();
    assert!(matches!(&e, AppendError::DiskFull { what } if what.contains("consume-queue")), "a new consume-queue file: {e:?}");
    let mut index_full = None;
    for i in 0..3 {
        match store.append(&[small("full", 0, Some(format!("id-{i}")))]) {
            Ok(a) => stored.push(a.messages[0].log_offset),
            Err(e) => {
                index_full = Some(e);
                break;
            }
        }
    }
    let e = index_full.expect("three indexed messages need a new index file (two entries per file)");
    assert!(matches!(&e, AppendError::DiskFull { what } if what.contains("index")), "a new index file: {e:?}");
    // Refused appends left nothing behind: the log's end moved only for those that succeeded.
    assert!(store.end_offset() >= end_before);
    store.verify().expect("the log is valid after refused appends");

    // Space freed while the store runs: every kind of write resumes, without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&ballast).unwrap();
    let a = store.append(&[small("fresh", 0, None)]).expect("a new queue once space is free");
    assert_eq!(a.messages[0].queue_offset, 0);
    let a = store.append(&[small("full", 1, Some("after".into()))]).expect("an indexed message once space is free");
    assert_eq!(store.find_by_id("after").unwrap().map(|m| m.log_offset), Some(a.messages[0].log_offset));
    let mut rolled = false;
    for i in 0..12 {
        let a = store.append(&[message("full", i % 2, None)]).expect("the log rolls again once space is free");
        rolled |= a.messages[0].log_offset >= end_before.next_multiple_of(config.segment_bytes);
        stored.push(a.messages[0].log_offset);
        if rolled {
            break;
        }
    }
    assert!(rolled, "the appends after freeing space reached a new segment");
    for o in &stored {
        store.read(*o).unwrap_or_else(|e| panic!("message at {o} lost: {e}"));
    }
    store.verify().unwrap();
    store.close().unwrap();
}

/// The broker answers a full disk with the protocol's `DiskFull` (naming what could not be
/// created) and the admin API's 507, stays up, and takes sends again once space is freed.
#[test]
fn broker_answers_disk_full_and_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    // The broker's index preallocates 84 MiB, and each consume queue 6 MiB.
    let Some(_mount) = tmpfs(dir.path(), 160) else { return };
    let data = dir.path().join("data");
    let env = [("WASMQ_SEGMENT_BYTES", "1048576"), ("WASMQ_MESSAGE_BYTES_MAX", "262144"), ("WASMQ_RETENTION_DISK_PERCENT", "100")];
    let broker = Broker::start(&data, &env);
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        broker.admin().create_topic("full", 1).await.unwrap();
        let producer = Producer::new(broker.connect().await, "p").with_retries(0);
        producer.send("full", OutgoingMessage::new(&b"first"[..])).await.unwrap();
        // Leave about two segments' room, held by a ballast file freed later.
        let ballast = dir.path().join("ballast");
        let keep = 2_500_000;
        std::fs::write(&ballast, vec![1u8; (free_bytes(dir.path()) - keep) as usize]).unwrap();
        let mut sent = vec![b"first".to_vec()];
        let body = vec![b'f'; 100 * 1024];
        let e = loop {
            match producer.send("full", OutgoingMessage::new(body.clone())).await {
                Ok(_) => sent.push(body.clone()),
                Err(e) => break e,
            }
            assert!(sent.len() < 100, "2.5 MB of room cannot hold 10 MB");
        };
        assert_eq!(e.code(), Some(ErrorCode::DiskFull), "{e}");
        assert!(e.to_string().contains("segment"), "the error names what could not be created: {e}");
        let admin = broker.admin();
        let m = wasmq_client::admin_types::SendMessage {
            body: "x".repeat(100 * 1024),
            key: None,
            tags: None,
            properties: Vec::new(),
            queue_id: None,
        };
        match admin.send_message("full", &m).await {
            Err(wasmq_client::ClientError::Admin { status: 507, message }) => assert!(message.contains("segment"), "{message}"),
            other => panic!("expected 507 from the admin API, got {other:?}"),
        }
        // Still serving: everything acknowledged reads back.
        let consumer = PullConsumer::new(broker.connect().await);
        let got = consumer.pull("full", 0, 0, 1000, std::time::Duration::ZERO).await.unwrap();
        assert_eq!(got.messages.iter().map(|m| m.message.body.to_vec()).collect::<Vec<_>>(), sent);

        std::fs::remove_file(&ballast).unwrap();
        for _ in 0..12 {
            producer.send("full", OutgoingMessage::new(body.clone())).await.expect("sends resume once space is freed");
        }
        let sent_back = admin.send_message("full", &m).await.expect("the admin API's send resumes too");
        assert!(sent_back.log_offset > 0);
    });
    assert!(broker.stop().success(), "a clean stop after the disk was full");
}
