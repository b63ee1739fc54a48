//! `wasmq bench produce|consume|e2e|plugins|transactions|grpc|ceiling`: throughput and latency against a running broker
//! (`grpc` in `bench_grpc.rs`),
//! each throughput also as a share of this machine's TLS ceiling measured in the same run (a
//! plain rustls client→server copy over loopback with the same provider and cipher suites).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmq_client::{ClientError, OutgoingMessage, Producer, PullConsumer, TransactionProducer, TxDecision};

use crate::Cli;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Produce as fast as possible: msgs/s, MB/s, batch ack latency.
    Produce(Common),
    /// Catch-up consumption of everything in the topic (filled first if empty).
    Consume(Common),
    /// End-to-end latency at a fixed rate.
    E2e(E2e),
    /// Produce and consume with a router and a filter plugin attached, against the same run
    /// without plugins, in alternating rounds; plus each plugin's time per message.
    Plugins(PluginBench),
    /// Transactions (a half message and its commit, one message each) against plain sends of
    /// one message, in alternating rounds.
    Transactions(TxBench),
    /// The RocketMQ 5 gRPC front end: one message per SendMessage, then receive and ack, beside
    /// the native protocol's one-message sends in the same run.
    Grpc(crate::bench_grpc::GrpcBench),
    /// The TLS copy ceiling alone.
    Ceiling {
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    #[arg(long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Message body bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per send (128 × 1 KiB: a 128 KiB batch, an eighth of the `batch.size` the
    /// OpenMessaging Benchmark gives Kafka producers).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Connections (producers or consumers).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Sends in flight per connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Produce: seconds sent first and left out of the figures, as the OpenMessaging
    /// Benchmark's warm-up: a fresh broker's first gigabytes go into page-cache memory the
    /// machine has not touched lately, which on a VM whose host takes back free memory costs
    /// several times a warm page (docs/benchmarks/2026-12.md). Ignored with --count.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Skip the TLS ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
    /// A user property on every message, `name=value` (repeatable).
    #[arg(long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
    /// Give messages keys `k0`..`k<N-1>` in turn.
    #[arg(long)]
    keys: Option<u64>,
    /// With --keys: one key per send (every message of a batch shares it) instead of per message.
    #[arg(long)]
    key_per_batch: bool,
    /// Consume: pull as this consumer group (a filter plugin attached to it then runs).
    #[arg(long)]
    group: Option<String>,
}

impl Common {
    /// One message per send, as `bench grpc` compares with.
    pub(crate) fn one_by_one(
        topic: &str,
        queues: u32,
        size: usize,
        concurrency: usize,
        in_flight: usize,
        duration: u64,
        warmup: u64,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            queues,
            size,
            batch: 1,
            concurrency,
            in_flight,
            count: None,
            duration,
            warmup,
            no_ceiling: true,
            properties: Vec::new(),
            keys: None,
            key_per_batch: false,
            group: None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct PluginBench {
    /// The router's `.wasm` (examples/tenant-router), attached with `tenants=acme=0-<queues-1>`.
    #[arg(long)]
    router: std::path::PathBuf,
    /// The filter's `.wasm` (examples/content-filter), attached with `where=prop:tenant == acme`
    /// (every message matches, so both runs deliver the same messages).
    #[arg(long)]
    filter: std::path::PathBuf,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds per produce round (each round adds to the topics the consume rounds read).
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// Rounds of each (best of).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Keys per message (the router then spreads each batch over many queues, which costs the
    /// store more than the one queue a plugin-free batch goes to); default: one key per batch.
    #[arg(long)]
    spread: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TxBench {
    #[arg(long, default_value = "bench-tx")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Connections.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Transactions (or sends) in flight per connection.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct E2e {
    #[arg(long, default_value = "bench-e2e")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds sent at the same rate first and left out of the figures (connections, the
    /// topic's first pages and the consumers' first long polls settle in them).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Deliveries later than this many ms are counted per 100 ms of send time, to tell
    /// bursts of late messages from a slow tail.
    #[arg(long, default_value_t = 5)]
    late_ms: u64,
}

/// What `bench e2e` measured: every counted delivery's latency, the deliveries later than
/// `--late-ms` per 100 ms window of send time, and the host's steal per window (`None` where
/// the system does not report it).
struct E2eResult {
    latency: Histogram<u64>,
    late: Vec<u64>,
    steal_ms: Option<Vec<u64>>,
    /// Messages sent in the measured seconds (each should be one latency sample).
    sent_measured: u64,
}

/// Time the hypervisor ran something else while this machine's CPUs had work ("steal", the
/// eighth column of `/proc/stat`'s `cpu` line), summed over all CPUs, in ms. On a VM, a stall
/// no thread of the guest can see shows up here; `None` off Linux or when not reported.
fn host_steal_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a constant.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    steal_ms_of(&stat, u64::try_from(ticks_per_s).ok().filter(|&t| t > 0)?)
}

/// `CLOCK_MONOTONIC` (what `Instant` reads on Linux) in seconds.
fn monotonic_s() -> Option<f64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to fill.
    (unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } == 0).then(|| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9)
}

fn steal_ms_of(proc_stat: &str, ticks_per_s: u64) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let steal: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(steal * 1000 / ticks_per_s)
}

const LATE_WINDOW_US: u64 = 100_000;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub(crate) fn pct(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms", ms(0.5), ms(0.99), ms(0.999))
}

pub(crate) async fn run(cli: &Cli, command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Produce(c) => {
            ensure_topic(cli, &c.topic, c.queues).await?;
            let ceiling = if c.no_ceiling { None } else { Some(best_ceiling().await?) };
            let Produced { msgs, secs, latency: h, warmup } = produce(cli, c).await?;
            let rate = msgs as f64 / secs;
            let mb = rate * c.size as f64 / 1e6;
            if let Some((n, s)) = warmup {
                println!("warm-up: {n} messages in {s:.2} s ({:.0} msgs/s), not counted", n as f64 / s);
            }
            println!("produced {msgs} messages in {secs:.2} s; batch ack latency {}", pct(&h));
            println!("--- summary ---");
            println!("produce: {rate:.0} msgs/s, {mb:.1} MB/s{}", share(mb, ceiling));
        }
        BenchCommand::Consume(c) => {
            ensure_topic(cli, &c.topic, c.queues).await?;
            let ceiling = if c.no_ceiling { None } else { Some(best_ceiling().await?) };
            let (msgs, secs) = consume(cli, c).await?;
            let rate = msgs as f64 / secs;
            let mb = rate * c.size as f64 / 1e6;
            println!("--- summary ---");
            println!("consume: {rate:.0} msgs/s, {mb:.1} MB/s{}", share(mb, ceiling));
        }
        BenchCommand::E2e(e) => {
            ensure_topic(cli, &e.topic, e.queues).await?;
            let E2eResult { latency: h, late, steal_ms, sent_measured } = e2e(cli, e).await?;
            // A window's late deliveries were delayed by whatever happened from their send
            // time on: its steal and the next window's.
            let steal_near = |i: usize| steal_ms.as_ref().map(|s| s.get(i).copied().unwrap_or(0) + s.get(i + 1).copied().unwrap_or(0));
            let windows: Vec<String> = late
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let at = (i as u64 * LATE_WINDOW_US) as f64 / 1e6;
                    match steal_near(i) {
                        Some(st) if st > 0 => format!("{at:.1} s: {n} (steal {st} ms)"),
                        _ => format!("{at:.1} s: {n}"),
                    }
                })
                .collect();
            let n_late: u64 = late.iter().sum();
            if !windows.is_empty() {
                eprintln!("deliveries over {} ms by send time: {}", e.late_ms, windows.join(", "));
            }
            println!("--- summary ---");
            println!("e2e at {} msgs/s: {} ({} samples of {sent_measured} sent after {} s warm-up)", e.rate, pct(&h), h.len(), e.warmup);
            println!("late: {n_late} deliveries over {} ms, in {} of {} windows of 100 ms", e.late_ms, windows.len(), e.duration * 10);
            if let Some(steal) = &steal_ms {
                let with_steal = late.iter().enumerate().filter(|&(i, &n)| n > 0 && steal_near(i).unwrap_or(0) > 0).count();
                println!(
                    "host steal: {} ms over the {} s measured (all CPUs), most {} ms in one window; {with_steal} of the {} late windows had steal",
                    steal.iter().sum::<u64>(),
                    e.duration,
                    steal.iter().max().copied().unwrap_or(0),
                    windows.len()
                );
            }
        }
        BenchCommand::Plugins(p) => plugins(cli, p).await?,
        BenchCommand::Transactions(t) => transactions(cli, t).await?,
        BenchCommand::Grpc(g) => crate::bench_grpc::run(cli, g).await?,
        BenchCommand::Ceiling { bytes } => {
            let mb = ceiling(*bytes).await?;
            println!("--- summary ---");
            println!("TLS ceiling: {mb:.0} MB/s");
        }
    }
    Ok(())
}

/// One round of one-message sends (`transactional`: each a half message then its commit):
/// operations per second and each operation's latency.
async fn tx_round(cli: &Cli, t: &TxBench, transactional: bool) -> Result<(f64, Histogram<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(t.duration);
    let template = OutgoingMessage::new(Bytes::from(vec![b'x'; t.size]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..t.concurrency {
        let conn = cli.connect().await?;
        let tx = Arc::new(TransactionProducer::start(conn.clone(), "bench-tx", |_| TxDecision::Commit).await?);
        let plain = Producer::new(conn, "bench-tx");
        for _ in 0..t.in_flight {
            let (tx, plain, template, topic) = (Arc::clone(&tx), plain.clone(), template.clone(), t.topic.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                while Instant::now() < deadline {
                    let at = Instant::now();
                    if transactional {
                        let done = tx.send(&topic, template.clone(), |_| TxDecision::Commit).await?;
                        done.ended?;
                    } else {
                        plain.send(&topic, template.clone()).await?;
                    }
                    h.saturating_record(at.elapsed().as_micros() as u64);
                }
                Ok::<_, ClientError>(h)
            }));
        }
    }
    let mut h = histogram();
    for task in tasks {
        h.add(task.await?.context("send failed")?)?;
    }
    Ok((h.len() as f64 / started.elapsed().as_secs_f64(), h))
}

async fn transactions(cli: &Cli, t: &TxBench) -> Result<()> {
    ensure_topic(cli, &t.topic, t.queues).await?;
    let (mut plain, mut tx) = (Vec::new(), Vec::new());
    for round in 1..=t.rounds {
        let (p, ph) = tx_round(cli, t, false).await?;
        let (x, xh) = tx_round(cli, t, true).await?;
        println!("round {round}: plain {p:.0} sends/s ({}); transactional {x:.0} tx/s ({})", pct(&ph), pct(&xh));
        plain.push(p);
        tx.push(x);
    }
    let (p, x) = (plain.iter().sum::<f64>() / plain.len() as f64, tx.iter().sum::<f64>() / tx.len() as f64);
    println!("--- summary ---");
    println!("transactions: {x:.0} tx/s vs plain {p:.0} sends/s ({:.0} %)", 100.0 * x / p);
    Ok(())
}

fn share(mb: f64, ceiling: Option<f64>) -> String {
    ceiling.map(|c| format!(", {:.0} % of ceiling ({c:.0} MB/s)", 100.0 * mb / c)).unwrap_or_default()
}

pub(crate) async fn ensure_topic(cli: &Cli, topic: &str, queues: u32) -> Result<()> {
    match cli.admin().await?.create_topic(topic, queues).await {
        Ok(_) | Err(ClientError::Admin { status: 409, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What `produce` measured: the messages of the sends started after the warm-up, over the
/// seconds from its end until the last ack, and those sends' latencies; the warm-up's own
/// messages and seconds, if there was one.
pub(crate) struct Produced {
    pub(crate) msgs: u64,
    pub(crate) secs: f64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) warmup: Option<(u64, f64)>,
}

pub(crate) async fn produce(cli: &Cli, c: &Common) -> Result<Produced> {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Bytes::from(vec![b'x'; c.size]);
    let warmup = if c.count.is_some() { Duration::ZERO } else { Duration::from_secs(c.warmup) };
    let began = Instant::now();
    let measured_from = began + warmup;
    let deadline = measured_from + Duration::from_secs(c.duration);
    let limit = c.count.unwrap_or(u64::MAX);
    let properties = c.properties.iter().map(|kv| crate::key_value(kv, "--property")).collect::<Result<Vec<_>>>()?;
    let template = OutgoingMessage { properties, ..OutgoingMessage::new(body) };
    let mut tasks = Vec::new();
    for _ in 0..c.concurrency {
        let producer = Producer::new(cli.connect().await?, "bench");
        for _ in 0..c.in_flight {
            let (producer, sent, stop, template, topic, batch, keys) =
                (producer.clone(), sent.clone(), stop.clone(), template.clone(), c.topic.clone(), c.batch, c.keys);
            let key_step = if c.key_per_batch { batch as u64 } else { 1 };
            tasks.push(tokio::spawn(async move {
                let (mut h, mut warm) = (histogram(), 0u64);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let first = sent.fetch_add(batch as u64, Ordering::Relaxed);
                    if first >= limit {
                        break;
                    }
                    let msgs = (first..first + batch as u64)
                        .map(|i| match keys {
                            Some(n) => template.clone().with_key(format!("k{}", (i / key_step) % n.max(1))),
                            None => template.clone(),
                        })
                        .collect();
                    let t = Instant::now();
                    producer.send_batch(&topic, msgs).await?;
                    if t < measured_from {
                        warm += batch as u64;
                    } else {
                        h.saturating_record(t.elapsed().as_micros() as u64);
                    }
                }
                Ok::<_, ClientError>((h, warm))
            }));
        }
    }
    let progress = progress(sent.clone(), stop.clone());
    let (mut h, mut warm) = (histogram(), 0);
    for t in tasks {
        let (th, tw) = t.await?.context("send failed")?;
        h.add(th)?;
        warm += tw;
    }
    // Timed before the progress task ends: it may sleep up to a second more.
    let secs = measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    let msgs = (h.len() * c.batch as u64).min(sent.load(Ordering::Relaxed));
    let warmup = (!warmup.is_zero()).then_some((warm, warmup.as_secs_f64()));
    Ok(Produced { msgs, secs, latency: h, warmup })
}

pub(crate) fn progress(counter: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut t = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            t += 1;
            let now = counter.load(Ordering::Relaxed);
            eprintln!("  {t:>3} s: {:>9} msgs/s", now - last);
            last = now;
        }
    })
}

async fn consume(cli: &Cli, c: &Common) -> Result<(u64, f64)> {
    let probe = PullConsumer::new(cli.connect().await?);
    let mut ends = Vec::new();
    for q in 0..c.queues {
        let p = probe.pull(&c.topic, q, 0, 1, Duration::ZERO).await?;
        ends.push((p.min_offset, p.max_offset));
    }
    let total: u64 = ends.iter().map(|(a, b)| b - a).sum();
    if total == 0 {
        let fill = Common { count: Some(c.count.unwrap_or(1_000_000)), duration: 600, concurrency: 2, ..c.clone() };
        eprintln!("topic {} is empty; producing {} messages first", c.topic, fill.count.unwrap_or(0));
        produce(cli, &fill).await?;
        return Box::pin(consume(cli, &Common { count: None, ..c.clone() })).await;
    }
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..c.concurrency.max(1) {
        let conn = cli.connect().await?;
        let consumer = match &c.group {
            Some(g) => PullConsumer::for_group(conn, g.clone()),
            None => PullConsumer::new(conn),
        };
        let mine: Vec<(u32, u64, u64)> = (0..c.queues)
            .filter(|q| *q as usize % c.concurrency.max(1) == worker)
            .map(|q| (q, ends[q as usize].0, ends[q as usize].1))
            .collect();
        for (q, from, to) in mine {
            let (consumer, received, topic) = (consumer.clone(), received.clone(), c.topic.clone());
            tasks.push(tokio::spawn(async move {
                let mut at = from;
                while at < to {
                    let p = consumer.pull(&topic, q, at, 1024, Duration::ZERO).await?;
                    received.fetch_add(p.messages.len() as u64, Ordering::Relaxed);
                    at = p.next_offset.max(at + 1);
                }
                Ok::<_, ClientError>(())
            }));
        }
    }
    let progress = progress(received.clone(), stop.clone());
    for t in tasks {
        t.await?.context("pull failed")?;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    Ok((received.load(Ordering::Relaxed), secs))
}

async fn e2e(cli: &Cli, e: &E2e) -> Result<E2eResult> {
    let origin = Instant::now();
    // Send time (µs since `origin`) from which deliveries count; set when sending starts.
    let measure_from = Arc::new(AtomicU64::new(u64::MAX));
    let late_us = e.late_ms * 1000;
    let consumer = PullConsumer::new(cli.connect().await?);
    let mut starts = Vec::new();
    for q in 0..e.queues {
        starts.push(consumer.pull(&e.topic, q, 0, 1, Duration::ZERO).await?.max_offset);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for q in 0..e.queues {
        let (consumer, stop, topic, mut at) = (consumer.clone(), stop.clone(), e.topic.clone(), starts[q as usize]);
        let measure_from = Arc::clone(&measure_from);
        readers.push(tokio::spawn(async move {
            let mut r = E2eResult { latency: histogram(), late: Vec::new(), steal_ms: None, sent_measured: 0 };
            while !stop.load(Ordering::Relaxed) {
                let p = consumer.pull(&topic, q, at, 256, Duration::from_millis(500)).await?;
                let now = origin.elapsed().as_micros() as u64;
                let from = measure_from.load(Ordering::Relaxed);
                for m in &p.messages {
                    let sent = u64::from_le_bytes(m.message.body[..8].try_into().unwrap_or([0; 8]));
                    if sent < from {
                        continue;
                    }
                    let latency = now.saturating_sub(sent).max(1);
                    r.latency.saturating_record(latency);
                    if latency > late_us {
                        let w = ((sent - from) / LATE_WINDOW_US) as usize;
                        if r.late.len() <= w {
                            r.late.resize(w + 1, 0);
                        }
                        r.late[w] += 1;
                    }
                }
                at = p.next_offset.max(at);
            }
            Ok::<_, ClientError>(r)
        }));
    }
    // Messages due are sent once per millisecond as one batch (a producer lingering 1 ms), so
    // high rates do not cost one request per message.
    let producer = Producer::new(cli.connect().await?, "bench");
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    measure_from.store((started - origin).as_micros() as u64 + e.warmup * 1_000_000, Ordering::Relaxed);
    if let Some(mono) = monotonic_s() {
        // Lines the windows up with a trace taken on the same clock (`perf record -k CLOCK_MONOTONIC`).
        eprintln!("measuring from CLOCK_MONOTONIC {:.6} s", mono - started.elapsed().as_secs_f64() + e.warmup as f64);
    }
    let deadline = started + Duration::from_secs(e.warmup + e.duration);
    // Steal per window of the measured seconds, read on the windows' boundaries (a late read
    // moves steal to the next window, never loses it).
    let steal = host_steal_ms().is_some().then(|| {
        let measured_from = started + Duration::from_secs(e.warmup);
        let windows = (e.duration * 1_000_000).div_ceil(LATE_WINDOW_US);
        tokio::spawn(async move {
            let mut per_window = Vec::new();
            tokio::time::sleep_until(measured_from.into()).await;
            let mut last = host_steal_ms().unwrap_or(0);
            for w in 1..=windows {
                tokio::time::sleep_until((measured_from + Duration::from_micros(w * LATE_WINDOW_US)).into()).await;
                let now = host_steal_ms().unwrap_or(last);
                per_window.push(now.saturating_sub(last));
                last = now;
            }
            per_window
        })
    });
    let mut sent = 0u64;
    let mut sent_measured = 0u64;
    let measured_from_us = measure_from.load(Ordering::Relaxed);
    let mut sends = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * e.rate as f64) as u64;
        let n = due.saturating_sub(sent).min(1024);
        if n == 0 {
            continue;
        }
        sent += n;
        // The messages of one tick share their send time, so they share one body (as `bench
        // produce` shares its template): the client's time goes to sending, not to filling.
        let stamp = origin.elapsed().as_micros() as u64;
        if stamp >= measured_from_us {
            sent_measured += n;
        }
        let mut body = vec![b'x'; e.size.max(8)];
        body[..8].copy_from_slice(&stamp.to_le_bytes());
        let body = Bytes::from(body);
        let batch: Vec<OutgoingMessage> = (0..n).map(|_| OutgoingMessage::new(body.clone())).collect();
        let (p, t) = (producer.clone(), e.topic.clone());
        sends.spawn(async move { p.send_batch(&t, batch).await.map(|_| ()) });
        while let Some(r) = sends.try_join_next() {
            r??;
        }
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let steal_ms = match steal {
        Some(task) => Some(task.await?),
        None => None,
    };
    let mut total = E2eResult { latency: histogram(), late: Vec::new(), steal_ms, sent_measured };
    for r in readers {
        let r = r.await??;
        total.latency.add(r.latency)?;
        if total.late.len() < r.late.len() {
            total.late.resize(r.late.len(), 0);
        }
        for (t, n) in total.late.iter_mut().zip(r.late) {
            *t += n;
        }
    }
    Ok(total)
}

/// Router on the send path and filter on the delivery path against the same workload without
/// plugins: `bench-plain` and `bench-plugins` topics, produce rounds alternating between them
/// (best of `rounds` each), then catch-up consumption of each (the plugin topic pulled as the
/// filtered group), then the plugins' own time per message from their stats.
async fn plugins(cli: &Cli, p: &PluginBench) -> Result<()> {
    let admin = cli.admin().await?;
    let upload = |path: &std::path::Path| {
        let (admin, path) = (admin.clone(), path.to_owned());
        async move {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            anyhow::Ok(admin.upload_plugin(bytes).await?)
        }
    };
    let router = upload(&p.router).await?;
    let filter = upload(&p.filter).await?;
    let (plain, routed, group) = ("bench-plain", "bench-plugins", "bench-filtered");
    for t in [plain, routed] {
        // Fresh topics each run, so both consume the same amount from the same state.
        match admin.delete_topic(t).await {
            Ok(()) | Err(ClientError::Admin { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        admin.create_topic(t, p.queues).await?;
    }
    let attach = |name: &str, version: u32, config: &[(&str, String)]| wasmq_client::admin_types::AttachPlugin {
        plugin: name.to_owned(),
        version,
        config: config.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        on_error: Some("fail-open".into()),
    };
    admin
        .attach_topic_plugin(routed, "router", &attach(&router.name, router.version, &[("tenants", format!("acme=0-{}", p.queues - 1))]))
        .await?;
    admin.attach_filter(group, routed, &attach(&filter.name, filter.version, &[("where", "prop:tenant == acme".to_owned())])).await?;
    let common = |topic: &str| Common {
        topic: topic.to_owned(),
        queues: p.queues,
        size: p.size,
        batch: p.batch,
        concurrency: p.concurrency,
        in_flight: 8,
        count: None,
        duration: p.duration,
        warmup: 0,
        no_ceiling: true,
        properties: vec!["tenant=acme".into()],
        keys: Some(1024),
        key_per_batch: !p.spread,
        group: None,
    };
    // Rounds alternate which side goes first, so drift on a shared machine hits both alike.
    let (mut best_plain, mut best_routed) = (0f64, 0f64);
    for round in 1..=p.rounds {
        let mut sides = [(plain, &mut best_plain), (routed, &mut best_routed)];
        if round % 2 == 0 {
            sides.reverse();
        }
        for (topic, best) in sides {
            let Produced { msgs, secs, latency: h, .. } = produce(cli, &common(topic)).await?;
            let rate = msgs as f64 / secs;
            eprintln!("round {round}: produce to {topic}: {rate:.0} msgs/s; batch ack latency {}", pct(&h));
            *best = best.max(rate);
        }
    }
    // Consumption reads the same messages (the plugin topic's) both ways: plainly, and as the
    // group whose filter then judges every message on the broker.
    let (mut consume_plain, mut consume_filtered) = (0f64, 0f64);
    for round in 1..=p.rounds {
        let mut sides = [(None, &mut consume_plain), (Some(group.to_owned()), &mut consume_filtered)];
        if round % 2 == 0 {
            sides.reverse();
        }
        for (g, best) in sides {
            let label = if g.is_some() { "with the filter" } else { "without" };
            let (msgs, secs) = consume(cli, &Common { group: g, concurrency: 1, ..common(routed) }).await?;
            let rate = msgs as f64 / secs;
            eprintln!("round {round}: consume {routed} {label}: {msgs} messages, {rate:.0} msgs/s");
            *best = best.max(rate);
        }
    }
    let stats = admin.attachments().await?;
    let cost = |role: &str| stats.iter().find(|a| a.topic == routed && a.role == role).map_or(0.0, |a| a.stats.ns_per_message);
    println!("--- summary ---");
    println!(
        "produce with router: {best_routed:.0} msgs/s, {:.0} % of {best_plain:.0} msgs/s without (router {:.0} ns/message in the broker)",
        100.0 * best_routed / best_plain,
        cost("router")
    );
    println!(
        "consume with filter: {consume_filtered:.0} msgs/s, {:.0} % of {consume_plain:.0} msgs/s without (filter {:.0} ns/message in the broker)",
        100.0 * consume_filtered / consume_plain,
        cost("filter")
    );
    Ok(())
}

/// The ceiling, measured before the workload (so the broker is idle) as the best of three
/// 512 MiB copies: on a shared 2-core machine a single run swings by 2x.
async fn best_ceiling() -> Result<f64> {
    let mut best = 0f64;
    for _ in 0..3 {
        best = best.max(ceiling(512 << 20).await?);
    }
    Ok(best)
}

/// One rustls connection over loopback copying `bytes` client→server in 64 KiB writes, with
/// the provider and protocol versions the broker uses; returns MB/s received.
pub(crate) async fn ceiling(bytes: u64) -> Result<f64> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert_der = cert.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).map_err(|e| anyhow::anyhow!(e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = vec![0u8; 256 << 10];
        let started = Instant::now();
        let mut n = 0u64;
        loop {
            let r = tls.read(&mut buf).await?;
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        Ok::<_, std::io::Error>((n, started.elapsed()))
    });
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls =
        tokio_rustls::TlsConnector::from(Arc::new(client)).connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp).await?;
    let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0;
    while sent < bytes {
        tls.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    tls.shutdown().await?;
    let (n, elapsed) = server_task.await??;
    let mb = n as f64 / elapsed.as_secs_f64() / 1e6;
    eprintln!("TLS ceiling ({suite}): {mb:.0} MB/s over one loopback connection");
    Ok(mb)
}

#[cfg(test)]
mod tests {
    use super::steal_ms_of;

    #[test]
    fn steal_is_the_eighth_column_of_the_cpu_line_in_ms() {
        let stat = "cpu  4867798 26698 1583658 5444558 255545 0 133576 92243 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_ms_of(stat, 100), Some(922_430));
        assert_eq!(steal_ms_of(stat, 1000), Some(92_243));
        // A kernel too old to report steal, or no aggregate line: nothing, not a zero.
        assert_eq!(steal_ms_of("cpu  1 2 3 4 5 6 7\n", 100), None);
        assert_eq!(steal_ms_of("cpu0 1 2 3 4 5 6 7 8 0 0\n", 100), None);
    }
}
