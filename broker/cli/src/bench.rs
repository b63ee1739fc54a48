//! `wasmq bench produce|consume|e2e|ceiling`: throughput and latency against a running broker,
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
use wasmq_client::{ClientError, OutgoingMessage, Producer, PullConsumer};

use crate::Cli;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Produce as fast as possible: msgs/s, MB/s, batch ack latency.
    Produce(Common),
    /// Catch-up consumption of everything in the topic (filled first if empty).
    Consume(Common),
    /// End-to-end latency at a fixed rate.
    E2e(E2e),
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
    /// Messages per send.
    #[arg(long, default_value_t = 32)]
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
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Skip the TLS ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
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
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn pct(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms", ms(0.5), ms(0.99), ms(0.999))
}

pub(crate) async fn run(cli: &Cli, command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Produce(c) => {
            ensure_topic(cli, &c.topic, c.queues).await?;
            let ceiling = if c.no_ceiling { None } else { Some(best_ceiling().await?) };
            let (msgs, secs, h) = produce(cli, c).await?;
            let rate = msgs as f64 / secs;
            let mb = rate * c.size as f64 / 1e6;
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
            let h = e2e(cli, e).await?;
            println!("--- summary ---");
            println!("e2e at {} msgs/s: {} ({} samples)", e.rate, pct(&h), h.len());
        }
        BenchCommand::Ceiling { bytes } => {
            let mb = ceiling(*bytes).await?;
            println!("--- summary ---");
            println!("TLS ceiling: {mb:.0} MB/s");
        }
    }
    Ok(())
}

fn share(mb: f64, ceiling: Option<f64>) -> String {
    ceiling.map(|c| format!(", {:.0} % of ceiling ({c:.0} MB/s)", 100.0 * mb / c)).unwrap_or_default()
}

async fn ensure_topic(cli: &Cli, topic: &str, queues: u32) -> Result<()> {
    match cli.admin()?.create_topic(topic, queues).await {
        Ok(_) | Err(ClientError::Admin { status: 409, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn produce(cli: &Cli, c: &Common) -> Result<(u64, f64, Histogram<u64>)> {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Bytes::from(vec![b'x'; c.size]);
    let deadline = Instant::now() + Duration::from_secs(c.duration);
    let limit = c.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c.concurrency {
        let producer = Producer::new(cli.connect().await?, "bench");
        for _ in 0..c.in_flight {
            let (producer, sent, stop, body, topic, batch) =
                (producer.clone(), sent.clone(), stop.clone(), body.clone(), c.topic.clone(), c.batch);
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if sent.fetch_add(batch as u64, Ordering::Relaxed) >= limit {
                        break;
                    }
                    let msgs = (0..batch).map(|_| OutgoingMessage::new(body.clone())).collect();
                    let t = Instant::now();
                    producer.send_batch(&topic, msgs).await?;
                    h.saturating_record(t.elapsed().as_micros() as u64);
                }
                Ok::<_, ClientError>(h)
            }));
        }
    }
    let progress = progress(sent.clone(), stop.clone());
    let mut h = histogram();
    for t in tasks {
        h.add(t.await?.context("send failed")?)?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    let secs = started.elapsed().as_secs_f64();
    let n = (h.len() * c.batch as u64).min(sent.load(Ordering::Relaxed));
    Ok((n, secs, h))
}

fn progress(counter: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
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
        let consumer = PullConsumer::new(cli.connect().await?);
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

async fn e2e(cli: &Cli, e: &E2e) -> Result<Histogram<u64>> {
    let origin = Instant::now();
    let consumer = PullConsumer::new(cli.connect().await?);
    let mut starts = Vec::new();
    for q in 0..e.queues {
        starts.push(consumer.pull(&e.topic, q, 0, 1, Duration::ZERO).await?.max_offset);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for q in 0..e.queues {
        let (consumer, stop, topic, mut at) = (consumer.clone(), stop.clone(), e.topic.clone(), starts[q as usize]);
        readers.push(tokio::spawn(async move {
            let mut h = histogram();
            while !stop.load(Ordering::Relaxed) {
                let p = consumer.pull(&topic, q, at, 256, Duration::from_millis(500)).await?;
                let now = origin.elapsed().as_micros() as u64;
                for m in &p.messages {
                    let sent = u64::from_le_bytes(m.message.body[..8].try_into().unwrap_or([0; 8]));
                    h.saturating_record(now.saturating_sub(sent).max(1));
                }
                at = p.next_offset.max(at);
            }
            Ok::<_, ClientError>(h)
        }));
    }
    // Messages due are sent once per millisecond as one batch (a producer lingering 1 ms), so
    // high rates do not cost one request per message.
    let producer = Producer::new(cli.connect().await?, "bench");
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(e.duration);
    let mut sent = 0u64;
    let mut sends = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * e.rate as f64) as u64;
        let n = due.saturating_sub(sent).min(1024);
        if n == 0 {
            continue;
        }
        sent += n;
        let stamp = origin.elapsed().as_micros() as u64;
        let batch: Vec<OutgoingMessage> = (0..n)
            .map(|_| {
                let mut body = vec![b'x'; e.size.max(8)];
                body[..8].copy_from_slice(&stamp.to_le_bytes());
                OutgoingMessage::new(body)
            })
            .collect();
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
    let mut h = histogram();
    for r in readers {
        h.add(r.await??)?;
    }
    Ok(h)
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
