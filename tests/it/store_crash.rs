//! Crash durability of the store with real processes (reliability test 1, adapted).
//!
//! A child appends with sync flush and prints every acknowledged message; it is killed with
//! SIGKILL at a random moment; then the checker opens the store and requires every acknowledged
//! message present and intact, in its queue at its queue offset, and the whole log valid to its
//! end. Every other cycle also garbles, zeroes or tears bytes past the highest acknowledged end
//! offset before the restart: what a power loss may do to bytes that were never fsynced.
//! Guards against: acked-but-lost writes, recovery cutting good records, a torn tail left in the
//! log, consume queues pointing at garbage.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use wasmq_store::Store;
use wasmq_tests::{crash_body, crash_queue, crash_store_config};

const SEGMENT_BYTES: u64 = 1 << 20;

struct Acked {
    log_offset: u64,
    queue_offset: u64,
}

fn cycles() -> usize {
    std::env::var("WASMQ_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Damages up to 256 KiB of the log past `from`, as a power loss may: zeros, random bytes, or
/// 512-byte sectors torn at random.
fn damage_past(dir: &std::path::Path, from: u64, rng: &mut impl Rng) -> &'static str {
    let kind = rng.random_range(0..3);
    let len = rng.random_range(1..256 * 1024u64);
    let mut at = from;
    while at < from + len {
        let base = at / SEGMENT_BYTES * SEGMENT_BYTES;
        let path = dir.join("commitlog").join(format!("{base:020}"));
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else { break };
        let n = (from + len - at).min(base + SEGMENT_BYTES - at);
        let mut buf = vec![0u8; n as usize];
        match kind {
            0 => {}
            1 => rng.fill(&mut buf[..]),
            _ => {
                for sector in buf.chunks_mut(512) {
                    if rng.random_bool(0.5) {
                        rng.fill(sector);
                    }
                }
            }
        }
        file.write_all_at(&buf, at - base).expect("damage");
        at += n;
    }
    ["zeroed", "garbled", "torn"][kind]
}

#[test]
fn sigkill_during_sync_appends_loses_no_acknowledged_message() {
    run_cycles(true, cycles());
}

/// Async flush promises less: nothing appended is lost when only the process dies (the page
/// cache survives it). No damage is simulated here; a power loss may lose the last interval.
#[test]
fn sigkill_during_async_appends_loses_nothing_appended() {
    run_cycles(false, cycles() / 2);
}

fn run_cycles(sync: bool, n_cycles: usize) {
    let child_bin = env!("CARGO_BIN_EXE_store-crash-child");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, Acked> = HashMap::new();
    let mut next_seq = 0u64;
    for cycle in 0..n_cycles {
        let mut child = Command::new(child_bin)
            .args([dir.path().to_str().unwrap(), &next_seq.to_string(), if sync { "sync" } else { "async" }])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(60)).expect("child ready");
        assert!(ready.starts_with("READY"), "{ready}");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        reader.join().unwrap();
        let mut max_end = 0;
        let mut this_cycle = 0;
        for line in rx.try_iter() {
            let f: Vec<u64> = line.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
            let [seq, log_offset, queue_offset, end] = f[..] else { panic!("bad line {line}") };
            acked.insert(seq, Acked { log_offset, queue_offset });
            max_end = max_end.max(end);
            next_seq = next_seq.max(seq + 1);
            this_cycle += 1;
        }
        // Sequence numbers handed out but never acknowledged are skipped past, so every
        // acknowledged number is unique.
        next_seq += 1000;
        let damage = if sync && cycle % 2 == 1 && max_end > 0 { damage_past(dir.path(), max_end, &mut rng) } else { "none" };

        let started = Instant::now();
        let (store, report) = Store::open(crash_store_config(dir.path(), sync))
            .unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed after damage {damage}: {e}"));
        let recovery = started.elapsed();
        assert!(report.crashed, "a SIGKILL is not a clean shutdown");
        assert!(report.end_offset >= max_end, "cycle {cycle}: log ends at {} before acked {max_end}", report.end_offset);
        for (seq, a) in &acked {
            let m = store.read(a.log_offset).unwrap_or_else(|e| panic!("cycle {cycle}: acked seq {seq} at {}: {e}", a.log_offset));
            assert_eq!(m.properties.unique_id.as_deref(), Some(format!("s{seq}").as_str()), "cycle {cycle}");
            assert_eq!(m.queue_id, crash_queue(*seq));
            assert_eq!(m.queue_offset, a.queue_offset);
            assert_eq!(m.body, crash_body(*seq), "cycle {cycle}: body of seq {seq}");
            let q = store.read_queue("crash", m.queue_id, a.queue_offset, 1, usize::MAX).unwrap();
            assert_eq!(q.messages[0].log_offset, a.log_offset, "cycle {cycle}: consume queue entry of seq {seq}");
        }
        // The index too: its slots reach the disk only at checkpoints, after the entries they
        // link, so recovery must cut it back to the checkpoint and rebuild the rest. A sample
        // (a lookup walks every index file): this cycle's newest acks and random older ones.
        let mut seqs: Vec<u64> = acked.keys().copied().collect();
        seqs.sort_unstable();
        let mut sample: Vec<u64> = seqs.iter().rev().take(100).copied().collect();
        if !seqs.is_empty() {
            sample.extend((0..100).map(|_| seqs[rng.random_range(0..seqs.len())]));
        }
        for seq in sample {
            let m = store.find_by_id(&format!("s{seq}")).unwrap().unwrap_or_else(|| panic!("cycle {cycle}: seq {seq} not in the index"));
            assert_eq!(m.log_offset, acked[&seq].log_offset, "cycle {cycle}: index entry of seq {seq}");
        }
        let verified = store.verify().unwrap_or_else(|e| panic!("cycle {cycle}: log invalid after recovery: {e}"));
        assert_eq!(verified.end_offset, store.end_offset());
        assert!(verified.records >= acked.len() as u64);
        eprintln!(
            "cycle {cycle}: {this_cycle} acked this cycle, {} in all, damage {damage}, recovered {} records in {recovery:?}, truncated at {:?}",
            acked.len(),
            report.records_recovered,
            report.truncated_at
        );
        store.close().unwrap();
    }
    assert!(acked.len() >= 100 * n_cycles.min(5), "the children acknowledged too little ({}) for the test to mean anything", acked.len());
}
