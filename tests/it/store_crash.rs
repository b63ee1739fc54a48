//! Crash durability of the store with real processes (reliability test 1, adapted).
//!
//! A child appends and prints every acknowledged message; it is killed with SIGKILL at a random
//! moment. Under sync flush a power loss is then simulated from the store's I/O journal
//! ([`wasmq_tests::power_loss`]): every byte of every store file (commit log, consume queues,
//! index, checkpoint) not covered by an fsync that completed before the kill is zeroed, garbled,
//! torn or kept. Then the checker opens the store and requires every acknowledged message present
//! and intact, in its queue at its queue offset, found by its id, and the whole log valid to its
//! end. Guards against: acknowledging before the fsync, acked-but-lost writes, recovery cutting
//! good records or trusting damaged consume queues, index or checkpoint, a torn tail left in the
//! log. `ack_before_fsync_is_caught` shows the simulation fails a store that acknowledges early.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;
use wasmq_store::Store;
use wasmq_tests::power_loss::{self, Damage};
use wasmq_tests::{crash_body, crash_queue, crash_store_config};

struct Acked {
    log_offset: u64,
    queue_offset: u64,
}

fn cycles() -> usize {
    std::env::var("WASMQ_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Child {
    /// Sync flush: acknowledged once fsynced; power loss simulated.
    Sync,
    /// Async flush: acknowledged once appended; the process dies, the machine does not.
    Async,
    /// Async flush acknowledged as if fsynced (the broken store); power loss simulated.
    AckAtAppend,
}

impl Child {
    fn arg(self) -> &'static str {
        match self {
            Child::Sync => "sync",
            Child::Async => "async",
            Child::AckAtAppend => "ack-at-append",
        }
    }
}

#[test]
fn sigkill_and_power_loss_during_sync_appends_lose_no_acknowledged_message() {
    let n = cycles();
    for (cycle, r) in run_cycles(Child::Sync, power_loss::Mode::Random, n).into_iter().enumerate() {
        if let Err(e) = r {
            panic!("cycle {cycle}: {e}");
        }
    }
}

/// Async flush promises less: nothing appended is lost when only the process dies (the page
/// cache survives it). No power loss is simulated here: it may lose the last interval.
#[test]
fn sigkill_during_async_appends_loses_nothing_appended() {
    for (cycle, r) in run_cycles(Child::Async, power_loss::Mode::Random, cycles() / 2).into_iter().enumerate() {
        if let Err(e) = r {
            panic!("cycle {cycle}: {e}");
        }
    }
}

/// The checker of the test above fails a store that acknowledges before its fsync: the same
/// cycles with acknowledgements at append (async flush every 100 ms) lose acknowledged messages
/// to the simulated power loss, where SIGKILL alone never would.
#[test]
fn ack_before_fsync_is_caught() {
    let results = run_cycles(Child::AckAtAppend, power_loss::Mode::All(Damage::Zeroed), 5);
    let caught: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!caught.is_empty(), "5 cycles of acknowledgements before the fsync, and no acknowledged message lost");
    eprintln!("caught: {}", caught[0]);
}

/// Runs `n_cycles` of append, SIGKILL (and power loss unless `child` is [`Child::Async`]),
/// recovery and check on one store; each cycle's check result, up to the first failure.
fn run_cycles(child: Child, damage: power_loss::Mode, n_cycles: usize) -> Vec<Result<(), String>> {
    let child_bin = env!("CARGO_BIN_EXE_store-crash-child");
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let journal = dir.path().join("io-journal");
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, Acked> = HashMap::new();
    let mut next_seq = 0u64;
    let mut results = Vec::new();
    let mut damaged = std::collections::BTreeSet::new();
    for cycle in 0..n_cycles {
        let mut process = Command::new(child_bin)
            .args([store_dir.to_str().unwrap(), &next_seq.to_string(), child.arg()])
            .env(wasmq_store::JOURNAL_ENV, &journal)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = process.stdout.take().unwrap();
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
        process.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        let status = process.wait().unwrap();
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
        let lost = if child == Child::Async {
            std::fs::remove_file(&journal).expect("the child wrote its I/O journal");
            "none (process death only)".to_owned()
        } else {
            let report = power_loss::lose_power(&journal, damage, &mut rng);
            assert!(report.journal_lines > 0, "cycle {cycle}: the child's I/O journal is empty");
            damaged.extend(report.files.iter().copied());
            report.to_string()
        };

        let started = Instant::now();
        let (store, report) = Store::open(crash_store_config(&store_dir, child == Child::Sync))
            .unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed after power loss ({lost}): {e}"));
        let recovery = started.elapsed();
        assert!(report.crashed, "a SIGKILL is not a clean shutdown");
        let checked = check(&store, &acked, max_end, report.end_offset, &mut rng).map_err(|e| format!("{e} (power loss: {lost})"));
        eprintln!(
            "cycle {cycle}: {this_cycle} acked this cycle, {} in all, power loss: {lost}, recovered {} records in {recovery:?}, truncated at {:?}",
            acked.len(),
            report.records_recovered,
            report.truncated_at
        );
        store.close().unwrap();
        let failed = checked.is_err();
        results.push(checked);
        if failed {
            return results;
        }
    }
    assert!(acked.len() >= 100 * n_cycles.min(5), "the children acknowledged too little ({}) for the test to mean anything", acked.len());
    if child == Child::Sync && n_cycles >= 10 {
        // Each kind of file the appends write lost bytes in some cycle (the checkpoint's
        // window, between its write and its fsync, is too short to be hit often).
        for kind in ["commit log", "consume queue", "index"] {
            assert!(damaged.contains(kind), "no {kind} bytes were ever destroyed in {n_cycles} cycles: {damaged:?}");
        }
    }
    results
}

/// Every acknowledged message is in the recovered store: at its log offset, intact, in its
/// queue at its queue offset, in the index (a sample: a lookup walks every index file); the log
/// is valid to its end.
fn check(store: &Store, acked: &HashMap<u64, Acked>, max_end: u64, end_offset: u64, rng: &mut impl Rng) -> Result<(), String> {
    if end_offset < max_end {
        return Err(format!("the log ends at {end_offset}, before the acknowledged end {max_end}"));
    }
    for (seq, a) in acked {
        let m = store.read(a.log_offset).map_err(|e| format!("acknowledged seq {seq} at {}: {e}", a.log_offset))?;
        let found = (m.properties.unique_id.as_deref(), m.queue_id, m.queue_offset, &m.body[..]);
        if found != (Some(format!("s{seq}").as_str()), crash_queue(*seq), a.queue_offset, &crash_body(*seq)[..]) {
            return Err(format!("acknowledged seq {seq} at {} is another or damaged message ({:?})", a.log_offset, m.properties.unique_id));
        }
        let q = store.read_queue("crash", m.queue_id, a.queue_offset, 1, usize::MAX).map_err(|e| format!("seq {seq}'s queue: {e}"))?;
        if q.messages.first().map(|m| m.log_offset) != Some(a.log_offset) {
            return Err(format!("consume queue {} entry {} does not point at acknowledged seq {seq}", m.queue_id, a.queue_offset));
        }
    }
    // The index too: its slots reach the disk only at checkpoints, after the entries they link,
    // so recovery must cut it back to the checkpoint and rebuild the rest.
    let mut seqs: Vec<u64> = acked.keys().copied().collect();
    seqs.sort_unstable();
    let mut sample: Vec<u64> = seqs.iter().rev().take(100).copied().collect();
    if !seqs.is_empty() {
        sample.extend((0..100).map(|_| seqs[rng.random_range(0..seqs.len())]));
    }
    for seq in sample {
        match store.find_by_id(&format!("s{seq}")) {
            Ok(Some(m)) if m.log_offset == acked[&seq].log_offset => {}
            other => return Err(format!("seq {seq} not found in the index at its log offset: {other:?}")),
        }
    }
    let verified = store.verify().map_err(|e| format!("log invalid after recovery: {e}"))?;
    if verified.end_offset != store.end_offset() || verified.records < acked.len() as u64 {
        return Err(format!("verify: {verified:?}, store end {}, {} acknowledged", store.end_offset(), acked.len()));
    }
    Ok(())
}
