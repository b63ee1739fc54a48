//! `wasmq bench grpc`: the RocketMQ 5 gRPC front end under the load RocketMQ applications make —
//! one message per SendMessage, ReceiveMessage in batches with one AckMessage per batch — over
//! TLS and HTTP/2 with the API's generated client, beside the native protocol's one-message
//! sends in the same run. Figures: docs/benchmarks.md.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use hyper_util::rt::TokioIo;
use tonic::codegen::http;
use wasmq_rocketmq_api::client::H2;
use wasmq_rocketmq_api::local::{ConnectionExecutor, Streams};
use wasmq_rocketmq_api::pb::{self, messaging_service_client::MessagingServiceClient};

use crate::Cli;
use crate::bench::{Common, Produced, ensure_topic, histogram, pct, produce, progress};

#[derive(Debug, Clone, Args)]
pub(crate) struct GrpcBench {
    /// The broker's RocketMQ 5 gRPC address (its `grpc_listen`).
    #[arg(long, env = "WASMQ_GRPC", default_value = "127.0.0.1:8081")]
    grpc: String,
    /// The name the broker's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[arg(long, default_value = "bench-grpc")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Message body bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Connections: HTTP/2 connections for gRPC, native connections for the native run.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Sends in flight per connection (one message each).
    #[arg(long, default_value_t = 500)]
    in_flight: usize,
    /// Seconds measured per produce run (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds sent first and left out of the figures.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Messages per ReceiveMessage (the PushConsumer's batch is 32).
    #[arg(long, default_value_t = 32)]
    receive_batch: i32,
    /// Skip the native protocol's run.
    #[arg(long)]
    no_native: bool,
    /// The broker's process id: its CPU time per message is reported for each run.
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// The broker process's CPU time (user + system) in µs, from `/proc/<pid>/stat`.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold spaces): state is field 3,
    // utime and stime fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let per_s = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&t| t > 0)?;
    Some(ticks * 1_000_000 / per_s)
}

/// Measures the broker's CPU over a run: `µs/msg` text once the messages are known.
struct Cpu(Option<(u32, u64)>);

impl Cpu {
    fn start(pid: Option<u32>) -> Self {
        Self(pid.and_then(|p| cpu_us(p).map(|c| (p, c))))
    }

    fn per_message(&self, msgs: u64) -> String {
        match self.0.and_then(|(p, before)| cpu_us(p).map(|now| now - before)) {
            Some(us) if msgs > 0 => format!(", broker CPU {:.2} µs/msg", us as f64 / msgs as f64),
            _ => String::new(),
        }
    }
}

type Client = MessagingServiceClient<H2>;

/// A client connection's driver: the HTTP/2 connection and the request bodies it spawned,
/// polled on the task that runs the connection's requests too (no hand-offs between threads
/// per request, as a broker connection runs).
struct Link {
    executor: ConnectionExecutor,
    streams: Streams,
    conn: Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>,
}

impl Link {
    /// Runs `work` (futures calling through this connection) beside the connection, on this
    /// task; their outputs once all are done.
    async fn run<W: Future>(mut self, work: impl IntoIterator<Item = W>) -> Vec<W::Output> {
        let mut work: FuturesUnordered<W> = work.into_iter().collect();
        let mut out = Vec::with_capacity(work.len());
        let mut conn_done = false;
        std::future::poll_fn(|cx| {
            loop {
                match work.poll_next_unpin(cx) {
                    Poll::Ready(Some(o)) => out.push(o),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            // A connection that ended fails the requests still waiting on it.
            if !conn_done && let Poll::Ready(r) = self.executor.poll(cx, &mut self.streams, self.conn.as_mut()) {
                conn_done = true;
                if let Err(e) = r {
                    eprintln!("gRPC connection ended: {e}");
                }
            }
            Poll::Pending
        })
        .await;
        out
    }
}

/// A gRPC client on its own TLS + HTTP/2 connection, and the connection's driver.
async fn connect(addr: &str, server_name: &str, ca: &Path) -> Result<(Client, Link)> {
    let config = wasmq_client::client_config(ca, b"h2")?;
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to the gRPC port {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.context("TLS handshake with the gRPC port")?;
    let executor = ConnectionExecutor::default();
    let (send, conn) = hyper::client::conn::http2::Builder::new(executor.clone()).handshake(TokioIo::new(tls)).await?;
    let origin: http::Uri = format!("https://{server_name}").parse()?;
    let client = MessagingServiceClient::with_origin(H2(send), origin).max_decoding_message_size(64 << 20);
    Ok((client, Link { executor, streams: Streams::new(), conn: Box::pin(conn) }))
}

/// A request with the headers every RocketMQ 5 client sends.
fn request<T>(message: T, client_id: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let m = r.metadata_mut();
    m.insert("x-mq-client-id", client_id.parse().expect("ASCII"));
    m.insert("x-mq-language", tonic::metadata::MetadataValue::from_static("RUST"));
    m.insert("x-mq-client-version", tonic::metadata::MetadataValue::from_static(env!("CARGO_PKG_VERSION")));
    m.insert("x-mq-protocol", tonic::metadata::MetadataValue::from_static("v2"));
    r
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() })
}

/// Fails on any status but OK (and MESSAGE_NOT_FOUND where `empty_ok`).
fn check(status: Option<&pb::Status>, what: &str, empty_ok: bool) -> Result<()> {
    let code = status.map_or(0, |s| s.code);
    if code == pb::Code::Ok as i32 || (empty_ok && code == pb::Code::MessageNotFound as i32) {
        return Ok(());
    }
    bail!(
        "{what}: status {} {}",
        pb::Code::try_from(code).map_or_else(|_| code.to_string(), |c| c.as_str_name().to_owned()),
        status.map_or("", |s| &s.message)
    )
}

pub(crate) async fn run(cli: &Cli, b: &GrpcBench) -> Result<()> {
    ensure_topic(cli, &b.topic, b.queues).await?;
    let native = if b.no_native {
        None
    } else {
        let topic = format!("{}-native", b.topic);
        ensure_topic(cli, &topic, b.queues).await?;
        let c = Common::one_by_one(&topic, b.queues, b.size, b.concurrency, b.in_flight, b.duration, b.warmup);
        eprintln!("native protocol, one message per send:");
        let cpu = Cpu::start(b.broker_pid);
        let Produced { msgs, secs, latency, .. } = produce(cli, &c).await?;
        Some((msgs as f64 / secs, latency, cpu.per_message(msgs)))
    };
    eprintln!("gRPC, one message per SendMessage:");
    let cpu = Cpu::start(b.broker_pid);
    let (sent, secs, latency) = grpc_produce(cli, b).await?;
    let send_cpu = cpu.per_message(sent);
    eprintln!("gRPC, ReceiveMessage × {} and one AckMessage per batch:", b.receive_batch);
    let cpu = Cpu::start(b.broker_pid);
    let (received, receive_secs) = grpc_consume(cli, b).await?;
    let receive_cpu = cpu.per_message(received);
    let rate = sent as f64 / secs;
    println!("--- summary ---");
    println!("grpc send: {rate:.0} msgs/s, send latency {}{send_cpu}", pct(&latency));
    if let Some((native_rate, native_latency, native_cpu)) = &native {
        println!("native send --batch 1: {native_rate:.0} msgs/s, send latency {}{native_cpu}", pct(native_latency));
        println!("grpc / native: {:.0} %", 100.0 * rate / native_rate);
    }
    println!("grpc receive + ack: {:.0} msgs/s ({received} messages){receive_cpu}", received as f64 / receive_secs);
    Ok(())
}

async fn grpc_produce(cli: &Cli, b: &GrpcBench) -> Result<(u64, f64, Histogram<u64>)> {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Bytes::from(vec![b'x'; b.size]);
    let began = Instant::now();
    let measured_from = began + Duration::from_secs(b.warmup);
    let deadline = measured_from + Duration::from_secs(b.duration);
    let mut tasks = Vec::new();
    for c in 0..b.concurrency {
        let (client, link) = connect(&b.grpc, &b.server_name, &cli.ca).await?;
        let client_id = format!("wasmq-bench-{}-{c}", std::process::id());
        let loops = (0..b.in_flight).map(|t| {
            let (mut client, sent, body, topic, client_id) =
                (client.clone(), sent.clone(), body.clone(), b.topic.clone(), client_id.clone());
            async move {
                let (mut h, mut n) = (histogram(), 0u64);
                while Instant::now() < deadline {
                    let message = pb::Message {
                        topic: resource(&topic),
                        user_properties: Default::default(),
                        system_properties: Some(pb::SystemProperties {
                            message_id: format!("{client_id}-{t}-{n}"),
                            message_type: pb::MessageType::Normal as i32,
                            body_encoding: pb::Encoding::Identity as i32,
                            born_timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                            ..Default::default()
                        }),
                        body: body.clone(),
                    };
                    n += 1;
                    let started = Instant::now();
                    let reply =
                        client.send_message(request(pb::SendMessageRequest { messages: vec![message] }, &client_id)).await?.into_inner();
                    check(reply.status.as_ref(), "SendMessage", false)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if started >= measured_from {
                        h.saturating_record(started.elapsed().as_micros() as u64);
                    }
                }
                Ok::<_, anyhow::Error>(h)
            }
        });
        tasks.push(tokio::spawn(link.run(loops.collect::<Vec<_>>())));
    }
    let progress = progress(sent.clone(), stop.clone());
    let mut h = histogram();
    for t in tasks {
        for one in t.await? {
            h.add(one?)?;
        }
    }
    let secs = measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    Ok((h.len(), secs, h))
}

/// Receives and acknowledges every message of the topic for a fresh group, as a SimpleConsumer
/// does, until a receive finds nothing.
async fn grpc_consume(cli: &Cli, b: &GrpcBench) -> Result<(u64, f64)> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let group = format!("bench-grpc-{}", std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..b.concurrency {
        let (client, link) = connect(&b.grpc, &b.server_name, &cli.ca).await?;
        let client_id = format!("wasmq-bench-consumer-{}-{c}", std::process::id());
        // A few receives in flight per connection, as a PushConsumer keeps one per queue.
        let loops = (0..b.queues.max(1)).map(|_| {
            let (mut client, received, topic, group, client_id, batch) =
                (client.clone(), received.clone(), b.topic.clone(), group.clone(), client_id.clone(), b.receive_batch);
            async move {
                loop {
                    let req = pb::ReceiveMessageRequest {
                        group: resource(&group),
                        message_queue: Some(pb::MessageQueue { topic: resource(&topic), ..Default::default() }),
                        batch_size: batch,
                        invisible_duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
                        long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
                        ..Default::default()
                    };
                    let mut stream = client.receive_message(request(req, &client_id)).await?.into_inner();
                    let mut entries = Vec::new();
                    while let Some(r) = stream.message().await? {
                        match r.content {
                            Some(pb::receive_message_response::Content::Status(s)) => check(Some(&s), "ReceiveMessage", true)?,
                            Some(pb::receive_message_response::Content::Message(m)) => {
                                let sp = m.system_properties.unwrap_or_default();
                                entries.push(pb::AckMessageEntry {
                                    message_id: sp.message_id,
                                    receipt_handle: sp.receipt_handle.unwrap_or_default(),
                                    lite_topic: None,
                                });
                            }
                            _ => {}
                        }
                    }
                    if entries.is_empty() {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let n = entries.len() as u64;
                    let ack = pb::AckMessageRequest { group: resource(&group), topic: resource(&topic), entries };
                    let reply = client.ack_message(request(ack, &client_id)).await?.into_inner();
                    check(reply.status.as_ref(), "AckMessage", false)?;
                    received.fetch_add(n, Ordering::Relaxed);
                }
            }
        });
        tasks.push(tokio::spawn(link.run(loops.collect::<Vec<_>>())));
    }
    let progress = progress(received.clone(), stop.clone());
    for t in tasks {
        for one in t.await? {
            one?;
        }
    }
    // The last receive of each task waited out its long poll for nothing: not counted.
    let secs = (started.elapsed().as_secs_f64() - 1.0).max(0.001);
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    Ok((received.load(Ordering::Relaxed), secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_process_cpu_time() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(super::cpu_us(std::process::id()).is_some_and(|us| us > 0));
        assert_eq!(super::cpu_us(u32::MAX), None, "no such process");
    }
}
