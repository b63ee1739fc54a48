//! Child process for the store crash test: opens the store, appends from 4 threads, and prints
//! `ACK <seq> <log_offset> <queue_offset> <end_offset>` for every append the store acknowledged
//! — until it is killed with SIGKILL (or, as a bound, after 60 s or 200,000 messages).
//!
//! Modes: `sync` (sync flush; acknowledged once durable), `async` (async flush; acknowledged
//! once appended), and `ack-at-append`: sync's promise broken on purpose — async flush, yet
//! reported as if durable — for the test that shows the power-loss simulation catches it.
//!
//! Usage: `store-crash-child <dir> <first-seq> <sync|async|ack-at-append>`

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmq_store::{NewMessage, Properties, Store};
use wasmq_tests::{crash_body, crash_queue, crash_store_config};

const THREADS: u64 = 4;
const MESSAGES_MAX: u64 = 200_000;
const RUN_TIME_MAX: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, first, mode] = args.as_slice() else {
        eprintln!("usage: store-crash-child <dir> <first-seq> <sync|async|ack-at-append>");
        std::process::exit(2);
    };
    let first: u64 = first.parse().expect("first-seq is a number");
    let sync = mode == "sync";
    // The test process opens the same store between cycles to check it; a process it forks at
    // that moment (another test's child, before its exec) briefly holds a copy of the lock's
    // descriptor, so a lock still held is waited for, shortly.
    let mut tries = 0;
    let (store, report) = loop {
        match Store::open(crash_store_config(dir.as_ref(), sync)) {
            Err(wasmq_store::OpenError::Locked { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => break r.expect("open store"),
        }
    };
    let store = Arc::new(store);
    println!("READY {}", report.end_offset);
    std::io::stdout().flush().expect("stdout");
    let next = Arc::new(AtomicU64::new(first));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (store, next) = (Arc::clone(&store), Arc::clone(&next));
            std::thread::spawn(move || {
                loop {
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    if seq - first >= MESSAGES_MAX || started.elapsed() > RUN_TIME_MAX {
                        return;
                    }
                    let m = NewMessage {
                        topic: "crash".into(),
                        queue_id: crash_queue(seq),
                        born_ms: seq,
                        properties: Properties { unique_id: Some(format!("s{seq}")), ..Properties::default() },
                        body: Bytes::from(crash_body(seq)),
                        ..NewMessage::default()
                    };
                    let a = if sync { store.append_durable(&[m]).expect("append") } else { store.append(&[m]).expect("append") };
                    let p = a.messages[0];
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {seq} {} {} {}", p.log_offset, p.queue_offset, a.end_offset).expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender");
    }
}
