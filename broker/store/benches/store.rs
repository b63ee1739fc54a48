//! `just bench-store`: the store's throughput against this disk's ceiling, measured in the same
//! run (neighbours on shared machines move absolute numbers; ratios hold).
//!
//! 1. raw buffered sequential write of N bytes (1 MiB writes, no fsync: what `dd` does) versus
//!    async-flush appends of the same N bytes as 1 KiB messages in batches of 32;
//! 2. sync-flush acks/s with 1 appender versus 64 concurrent appenders (group commit);
//! 3. recovery time after SIGKILL of a process that wrote a 1 GiB log.
//!
//! Options: `--bytes N` (default 1 GiB), `--seconds S` per sync run (default 3),
//! `--dir D` (default: a temporary directory under the target dir).
//! Ends with one summary line per figure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmq_store::{FlushMode, NewMessage, Properties, Store, StoreConfig};

const MESSAGE_BYTES: usize = 1024;
const BATCH: usize = 32;
const QUEUES: u32 = 8;
/// Time the store gets after opening to fault in its active segment, as a running broker's
/// store has long done before a load arrives.
const APPEND_WARM_UP: Duration = Duration::from_secs(2);

struct Args {
    bytes: u64,
    seconds: u64,
    dir: PathBuf,
    child_fill: Option<PathBuf>,
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        bytes: 1 << 30,
        seconds: 3,
        dir: PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/tmp")).join("wasmq-bench-store"),
        child_fill: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bytes" => args.bytes = it.next().and_then(|v| v.parse().ok()).expect("--bytes N"),
            "--seconds" => args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--dir" => args.dir = it.next().map(PathBuf::from).expect("--dir D"),
            "--child-fill" => args.child_fill = it.next().map(PathBuf::from),
            "--only" => args.only = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn batch(n: u64) -> Vec<NewMessage> {
    let body = Bytes::from(vec![0xA5u8; MESSAGE_BYTES]);
    (0..BATCH as u64)
        .map(|i| NewMessage {
            topic: "bench".into(),
            queue_id: ((n + i) % u64::from(QUEUES)) as u32,
            born_ms: n,
            properties: Properties::default(),
            body: body.clone(),
            ..NewMessage::default()
        })
        .collect()
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// What `dd bs=1M` does: buffered 1 MiB writes to a new file, no fsync.
fn raw_write(dir: &Path, bytes: u64) -> f64 {
    let path = dir.join("raw");
    let buf = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    let mut f = std::fs::File::create(&path).expect("raw file");
    let mut written = 0;
    while written < bytes {
        f.write_all(&buf).expect("raw write");
        written += buf.len() as u64;
    }
    drop(f);
    let rate = mb_s(written, started.elapsed());
    std::fs::remove_file(&path).expect("remove raw file");
    rate
}

fn async_appends(dir: &Path, bytes: u64) -> (f64, f64) {
    let config = StoreConfig::new(dir);
    let (store, _) = Store::open(config).expect("open");
    // Let the store pre-touch its active segment first, as it would long before a real load.
    std::thread::sleep(APPEND_WARM_UP);
    let per_batch = BATCH as u64 * MESSAGE_BYTES as u64;
    let batches = bytes / per_batch;
    let payloads: Vec<Vec<NewMessage>> = (0..16).map(batch).collect();
    let started = Instant::now();
    for n in 0..batches {
        store.append(&payloads[(n % 16) as usize]).expect("append");
    }
    let elapsed = started.elapsed();
    let log_bytes = store.end_offset();
    store.close().expect("close");
    (mb_s(batches * per_batch, elapsed), mb_s(log_bytes, elapsed))
}

/// Device flush requests so far, summed over block devices (`/sys/block/*/stat`, field 15 from
/// 0); `None` where the kernel does not report them. Counting them shows each ack really cost
/// (a share of) a device flush.
fn device_flushes() -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    for d in std::fs::read_dir("/sys/block").ok()? {
        let Ok(stat) = std::fs::read_to_string(d.ok()?.path().join("stat")) else { continue };
        if let Some(n) = stat.split_whitespace().nth(15).and_then(|v| v.parse::<u64>().ok()) {
            total += n;
            seen = true;
        }
    }
    seen.then_some(total)
}

/// How concurrent appenders are driven.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// One OS thread per appender, each blocking in `append_durable`.
    Threads,
    /// One driver thread keeping N appends in flight with `on_durable` callbacks: how the
    /// broker's few async workers serve many producer connections.
    InFlight,
}

fn sync_store(dir: &Path) -> Arc<Store> {
    let mut config = StoreConfig::new(dir);
    // Small segments: pre-touching a fresh segment is slow on this VM (host page allocation)
    // and would otherwise overlap the measurement; rolls during the run still pay pre-touch
    // at its steady-state cost per byte.
    config.segment_bytes = 16 << 20;
    config.flush = FlushMode::Sync { timeout: Duration::from_secs(10) };
    Arc::new(Store::open(config).expect("open").0)
}

fn bench_message(i: usize) -> [NewMessage; 1] {
    [NewMessage {
        topic: "bench".into(),
        queue_id: i as u32 % QUEUES,
        body: Bytes::from(vec![1u8; MESSAGE_BYTES]),
        ..NewMessage::default()
    }]
}

fn sync_acks(dir: &Path, drive: Drive, appenders: usize, seconds: u64) -> f64 {
    let store = sync_store(dir);
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = match drive {
        Drive::Threads => (0..appenders)
            .map(|t| {
                let (store, stop, acks) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&acks));
                std::thread::spawn(move || {
                    let m = bench_message(t);
                    while !stop.load(Ordering::Relaxed) {
                        store.append_durable(&m).expect("durable append");
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect(),
        Drive::InFlight => {
            let (store, stop, acks) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&acks));
            vec![std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel::<usize>();
                let messages: Vec<_> = (0..appenders).map(bench_message).collect();
                let issue = |slot: usize| {
                    let end = store.append(&messages[slot]).expect("append").end_offset;
                    let tx = tx.clone();
                    store.on_durable(end, move |r| {
                        r.expect("durable");
                        let _ = tx.send(slot);
                    });
                };
                (0..appenders).for_each(issue);
                let mut outstanding = appenders;
                while outstanding > 0 {
                    let slot = rx.recv().expect("completion");
                    acks.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        outstanding -= 1;
                    } else {
                        issue(slot);
                    }
                }
            })]
        }
    };
    // Warm up: let the store pre-touch its segments and the threads settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let acks_before = acks.load(Ordering::Relaxed);
    let started = Instant::now();
    let flushes_before = device_flushes();
    std::thread::sleep(Duration::from_secs(seconds));
    let n = acks.load(Ordering::Relaxed) - acks_before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let (Some(a), Some(b)) = (flushes_before, device_flushes()) {
        println!("  {appenders} appender(s): {} device flushes, {:.1} acks per flush", b - a, n as f64 / (b - a).max(1) as f64);
    }
    for t in threads {
        t.join().expect("appender");
    }
    n as f64 / elapsed.as_secs_f64()
}

/// Child: fill a store with `bytes` of messages (async flush), say so, then wait to be killed.
fn child_fill(dir: &Path, bytes: u64) -> ! {
    let (store, _) = Store::open(StoreConfig::new(dir)).expect("open");
    let payload = batch(0);
    while store.end_offset() < bytes {
        store.append(&payload).expect("append");
    }
    println!("FILLED {}", store.end_offset());
    std::io::stdout().flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(600));
    std::process::exit(1);
}

fn recovery_after_sigkill(dir: &Path, bytes: u64) -> (Duration, u64, u64) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--child-fill", dir.to_str().expect("utf-8 dir"), "--bytes", &bytes.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn filler");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line).expect("read");
    assert!(line.starts_with("FILLED"), "filler said {line:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let started = Instant::now();
    let (store, report) = Store::open(StoreConfig::new(dir)).expect("recover");
    let elapsed = started.elapsed();
    assert!(report.crashed);
    let end = store.end_offset();
    drop(store);
    (elapsed, end - report.scanned_from, report.records_recovered)
}

fn main() {
    let args = parse_args();
    if let Some(dir) = &args.child_fill {
        child_fill(dir, args.bytes);
    }
    std::fs::create_dir_all(&args.dir).expect("bench dir");
    println!(
        "wasmq store benchmark: {} MiB, {MESSAGE_BYTES}-byte messages, batches of {BATCH}, dir {}",
        args.bytes >> 20,
        args.dir.display()
    );

    let run = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut summary = Vec::new();
    if run("async") {
        // The page cache is as fast as memory once the guest holds the pages and as slow as the
        // host's page allocation before, so raw writes and appends alternate, each deleting its
        // files before the next, and the ratio is taken between the two best of three.
        let (mut raw_best, mut log_best) = (0f64, 0f64);
        for round in 1..=3 {
            let raw = raw_write(&fresh_dir(&args.dir, "raw"), args.bytes);
            let _ = std::fs::remove_dir_all(args.dir.join("raw"));
            println!("round {round}: raw buffered sequential write (1 MiB writes, no fsync): {raw:.0} MB/s");
            let (payload, log) = async_appends(&fresh_dir(&args.dir, "async"), args.bytes);
            let _ = std::fs::remove_dir_all(args.dir.join("async"));
            println!("round {round}: async-flush append: {payload:.0} MB/s of message bodies, {log:.0} MB/s of log");
            raw_best = raw_best.max(raw);
            log_best = log_best.max(log);
        }
        summary.push(format!(
            "async append: {log_best:.0} MB/s, {:.0} % of raw disk ({raw_best:.0} MB/s; best of 3 alternating runs each)",
            100.0 * log_best / raw_best
        ));
    }
    if args.only.as_deref() == Some("append") {
        let (payload, log) = async_appends(&fresh_dir(&args.dir, "async"), args.bytes);
        println!("async-flush append: {payload:.0} MB/s of message bodies, {log:.0} MB/s of log");
    }
    if run("sync") {
        let one = sync_acks(&fresh_dir(&args.dir, "sync1"), Drive::InFlight, 1, args.seconds);
        println!("sync flush, 1 appender: {one:.0} acks/s");
        let many = sync_acks(&fresh_dir(&args.dir, "sync64"), Drive::InFlight, 64, args.seconds);
        println!("sync flush, 64 concurrent appenders (in flight on one driver thread): {many:.0} acks/s");
        summary
            .push(format!("sync group commit: {many:.0} acks/s with 64 appenders, {:.1} x the {one:.0} acks/s of 1 appender", many / one));
        let one_t = sync_acks(&fresh_dir(&args.dir, "sync1t"), Drive::Threads, 1, args.seconds);
        println!("sync flush, 1 appender thread: {one_t:.0} acks/s");
        let many_t = sync_acks(&fresh_dir(&args.dir, "sync64t"), Drive::Threads, 64, args.seconds);
        println!("sync flush, 64 appender threads: {many_t:.0} acks/s");
        summary.push(format!(
            "sync group commit, thread per appender: {many_t:.0} acks/s with 64 threads, {:.1} x the {one_t:.0} acks/s of 1 thread",
            many_t / one_t
        ));
    }
    if run("recovery") {
        let (recovery, scanned, records) = recovery_after_sigkill(&fresh_dir(&args.dir, "recovery"), args.bytes);
        println!("recovery after SIGKILL: scanned {} MiB, {records} records", scanned >> 20);
        summary.push(format!(
            "recovery after SIGKILL: {:.2} s for a {} MiB log ({} MiB verified)",
            recovery.as_secs_f64(),
            args.bytes >> 20,
            scanned >> 20
        ));
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    println!("--- summary ---");
    for line in summary {
        println!("{line}");
    }
}
