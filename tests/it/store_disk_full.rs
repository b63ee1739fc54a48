//! A full disk is an error at roll-over, never a SIGBUS (reliability test 20a, adapted).
//!
//! The store runs on a 6 MiB tmpfs with 1 MiB segments. Writing into a mapped page of a sparse
//! file on a full file system kills the process with SIGBUS (measured on this machine kind);
//! because the store preallocates every file, it must instead answer `DiskFull`, keep serving
//! reads, and accept writes again once space is freed. If this test process survives, no
//! SIGBUS happened.
//!
//! Needs root (it mounts a tmpfs), as CI has. `WASMQ_SKIP_ROOT_TESTS=1` skips it elsewhere.

use std::process::Command;

use bytes::Bytes;
use wasmq_store::{AppendError, NewMessage, Store, StoreConfig};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_an_error_at_roll_over_never_a_sigbus() {
    if std::env::var_os("WASMQ_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipped: WASMQ_SKIP_ROOT_TESTS is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"]).arg(dir.path()).status().expect("run mount");
    assert!(status.success(), "mounting a tmpfs failed: this test needs root (set WASMQ_SKIP_ROOT_TESTS=1 to skip it)");
    let _mount = Mount(dir.path().to_owned());
    let data = dir.path().join("store");

    let mut config = StoreConfig::small_for_tests(&data);
    config.retention_disk_ratio_max = 1.0; // retention must not free space behind the test's back
    let (store, _) = Store::open(config.clone()).unwrap();
    let body = Bytes::from(vec![7u8; 100 * 1024]);
    let message = |i: u32| NewMessage { topic: "full".into(), queue_id: i % 2, body: body.clone(), ..NewMessage::default() };
    let mut stored = Vec::new();
    let full = loop {
        match store.append(&[message(stored.len() as u32)]) {
            Ok(a) => stored.push(a.messages[0].log_offset),
            Err(e) => break e,
        }
        assert!(stored.len() < 200, "a 6 MiB file system cannot hold 20 MiB");
    };
    assert!(matches!(full, AppendError::DiskFull { .. }), "expected DiskFull, got {full:?}");
    assert!(stored.len() >= 20, "only {} messages stored before the disk filled", stored.len());
    for o in &stored {
        assert_eq!(store.read(*o).unwrap().body, body, "reads go on while the disk is full");
    }
    assert!(matches!(store.append(&[message(0)]), Err(AppendError::DiskFull { .. })), "still full, still a clean error");

    // Free space by removing a ballast-like file: the oldest segment, through retention.
    let end_before = store.end_offset();
    let mut config_free = config.clone();
    config_free.retention_disk_ratio_max = 0.01;
    store.close().unwrap();
    let (store, report) = Store::open(config_free).unwrap();
    assert!(!report.crashed);
    assert!(store.enforce_retention().unwrap().segments_deleted >= 1);
    let a = store.append(&[message(1)]).expect("writes resume once space is free");
    assert!(a.messages[0].log_offset >= end_before);
    store.verify().unwrap();
}
