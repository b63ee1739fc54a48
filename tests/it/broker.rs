//! The broker end to end: the real `wasmq-broker` binary on ports chosen by the OS, real TLS
//! with its generated development CA, the Rust client. Guards against lost or reordered
//! messages, acknowledged messages lost across restarts and SIGKILL, long polls that do not
//! wake, and bad input that takes the broker down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmq_client::{ErrorCode, OutgoingMessage, Producer, PullConsumer, queue_for_key};
use wasmq_protocol::{Frame, Kind, Op};
use wasmq_tests::broker::Broker;
use wasmq_tests::runtime;

async fn read_all(consumer: &PullConsumer, topic: &str, queue: u32) -> Vec<wasmq_client::PulledMessage> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let p = consumer.pull(topic, queue, at, 1024, Duration::ZERO).await.unwrap();
        if p.messages.is_empty() {
            return out;
        }
        at = p.next_offset;
        out.extend(p.messages);
    }
}

/// 100k messages from 4 concurrent producers over 8 queues: none lost or duplicated, each
/// queue in send order, every key on its queue.
#[test]
fn hundred_thousand_messages_from_four_producers() {
    const PRODUCERS: usize = 4;
    const BATCHES: usize = 250;
    const BATCH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        broker.admin().create_topic("load", 8).await.unwrap();
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let producer = Producer::new(broker.connect().await, "load-producers");
            tasks.push(tokio::spawn(async move {
                for b in 0..BATCHES {
                    let key = format!("p{p}-k{}", b % 16);
                    let msgs = (0..BATCH)
                        .map(|i| OutgoingMessage::new(format!("{p}:{}", b * BATCH + i).into_bytes()).with_ordering_key(key.clone()))
                        .collect();
                    let receipts = producer.send_batch("load", msgs).await.unwrap();
                    assert!(receipts.iter().all(|r| r.queue_id == queue_for_key(&key, 8)));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let consumer = PullConsumer::new(broker.connect().await);
        let mut seen = HashSet::new();
        let mut total = 0;
        for q in 0..8 {
            let msgs = read_all(&consumer, "load", q).await;
            let mut last_seq: HashMap<usize, usize> = HashMap::new();
            for (i, m) in msgs.iter().enumerate() {
                assert_eq!(m.queue_offset, i as u64, "dense offsets");
                let key = m.message.ordering_key.clone().unwrap();
                assert_eq!(queue_for_key(&key, 8), q, "key {key} on queue {q}");
                let text = String::from_utf8(m.message.body.to_vec()).unwrap();
                let (p, seq) = text.split_once(':').unwrap();
                let (p, seq): (usize, usize) = (p.parse().unwrap(), seq.parse().unwrap());
                if let Some(prev) = last_seq.insert(p, seq) {
                    assert!(seq > prev, "queue {q}: producer {p} sent {prev} before {seq}, read after");
                }
                assert!(seen.insert(m.message.unique_id.clone()), "duplicate {}", m.message.unique_id);
            }
            total += msgs.len();
        }
        assert_eq!(total, PRODUCERS * BATCHES * BATCH);
    });
    assert!(broker.stop().success());
}

/// Acknowledged messages survive a clean restart, and a SIGKILL followed by a simulated power
/// loss (every store byte not yet fsynced destroyed), under sync flush.
#[test]
fn restarts_keep_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = journal_dir.path().join("io-journal");
    let env = [("WASMQ_FLUSH", "sync"), (wasmq_store::JOURNAL_ENV, journal.to_str().unwrap())];
    let broker = Broker::start(dir.path(), &env);
    let rt = runtime();
    let mut acked = rt.block_on(async {
        broker.admin().create_topic("durable", 4).await.unwrap();
        let producer = Producer::new(broker.connect().await, "g");
        let mut acked = Vec::new();
        for i in 0..500 {
            acked.push((
                producer.send("durable", OutgoingMessage::new(format!("clean-{i}").into_bytes())).await.unwrap(),
                format!("clean-{i}"),
            ));
        }
        acked
    });
    assert!(broker.stop().success(), "SIGTERM: drain, flush, exit 0");
    assert!(!dir.path().join("store").join("abort").exists(), "a clean stop leaves no abort marker");

    let broker = Broker::restart_from(dir.path(), &env);
    let more = rt.block_on(async {
        let producer = Producer::new(broker.connect().await, "g");
        let stop = Instant::now() + Duration::from_millis(1500);
        let mut tasks = Vec::new();
        for t in 0..4 {
            let producer = producer.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while Instant::now() < stop {
                    let body = format!("kill-{t}-{i}");
                    match producer.send("durable", OutgoingMessage::new(body.clone().into_bytes())).await {
                        Ok(r) => acked.push((r, body)),
                        Err(_) => break,
                    }
                    i += 1;
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        tasks
    });
    let loss = broker.lose_power(&journal, wasmq_tests::power_loss::Mode::Random);
    println!("power loss: {loss}");
    let more: Vec<_> = rt.block_on(async {
        let mut all = Vec::new();
        for t in more {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(!more.is_empty(), "some sends were acknowledged before the kill");
    acked.extend(more);

    let broker = Broker::restart_from(dir.path(), &env);
    rt.block_on(async {
        let consumer = PullConsumer::new(broker.connect().await);
        for (receipt, body) in &acked {
            let p = consumer.pull("durable", receipt.queue_id, receipt.queue_offset, 1, Duration::ZERO).await.unwrap();
            assert_eq!(p.messages.len(), 1, "acknowledged {} lost", receipt.message_id);
            assert_eq!(p.messages[0].message.body, body.as_bytes(), "queue {} offset {}", receipt.queue_id, receipt.queue_offset);
            assert_eq!(p.messages[0].message.unique_id, receipt.message_id);
        }
    });
    drop(broker);
}

/// A pull waiting on an empty queue answers as soon as a message arrives.
#[test]
fn long_poll_wakes_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        broker.admin().create_topic("poll", 1).await.unwrap();
        let consumer = PullConsumer::new(broker.connect().await);
        let started = Instant::now();
        let waiting = tokio::spawn(async move { consumer.pull("poll", 0, 0, 10, Duration::from_secs(20)).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let producer = Producer::new(broker.connect().await, "g");
        producer.send("poll", OutgoingMessage::new(b"wake up".to_vec())).await.unwrap();
        let p = waiting.await.unwrap();
        let waited = started.elapsed();
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.messages[0].message.body, &b"wake up"[..]);
        assert!(waited >= Duration::from_millis(300), "it did wait ({waited:?})");
        assert!(waited < Duration::from_secs(5), "it woke promptly ({waited:?}), not at the 20 s deadline");
        // An empty long poll ends at its deadline with nothing.
        let consumer = PullConsumer::new(broker.connect().await);
        let t = Instant::now();
        let p = consumer.pull("poll", 0, 1, 10, Duration::from_millis(400)).await.unwrap();
        assert!(p.messages.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(350));
    });
}

async fn raw_tls(broker: &Broker) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = wasmq_client::client_config(&broker.ca, b"wasmq/1").unwrap();
    let tcp = tokio::net::TcpStream::connect(&broker.listen).await.unwrap();
    tokio_rustls::TlsConnector::from(config).connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap()
}

async fn read_frame(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut buf = bytes::BytesMut::new();
    let dec = wasmq_protocol::FrameDecoder::new(1 << 24);
    loop {
        if let Some(f) = dec.decode(&mut buf).unwrap() {
            return Some(f);
        }
        let n = tokio::time::timeout(Duration::from_secs(15), s.read_buf(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
    }
}

fn hello_frame() -> Frame {
    let h = wasmq_protocol::Request::Hello(wasmq_protocol::HelloRequest {
        version_min: wasmq_protocol::PROTOCOL_VERSION,
        version_max: wasmq_protocol::PROTOCOL_VERSION,
        client_id: "raw".into(),
        credentials: None,
    });
    Frame { kind: Kind::Request, request_id: 1, code: Op::Hello as u16, body: h.encode() }
}

/// Each kind of bad input gets a clear error or a disconnect, and the broker keeps serving.
#[test]
fn bad_input_gets_an_error_and_the_broker_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_MESSAGE_BYTES_MAX", "65536")]);
    runtime().block_on(async {
        broker.admin().create_topic("t", 2).await.unwrap();

        // Plaintext on the TLS port: the handshake fails and the connection is closed.
        let mut tcp = tokio::net::TcpStream::connect(&broker.listen).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut b)).await.expect("closed promptly");
        assert!(matches!(n, Ok(n) if n < 64) || n.is_err());

        // A request before Hello.
        let mut s = raw_tls(&broker).await;
        s.write_all(&Frame { kind: Kind::Request, request_id: 5, code: Op::Route as u16, body: bytes::Bytes::new() }.to_bytes())
            .await
            .unwrap();
        let f = read_frame(&mut s).await.expect("an answer");
        assert_eq!((f.request_id, f.code), (5, ErrorCode::HandshakeRequired as u16));
        assert!(read_frame(&mut s).await.is_none(), "then closed");

        // An unsupported version.
        let mut s = raw_tls(&broker).await;
        let newer = wasmq_protocol::PROTOCOL_VERSION + 1;
        let h = wasmq_protocol::Request::Hello(wasmq_protocol::HelloRequest {
            version_min: newer,
            version_max: newer + 2,
            client_id: "x".into(),
            credentials: None,
        });
        s.write_all(&Frame { kind: Kind::Request, request_id: 1, code: Op::Hello as u16, body: h.encode() }.to_bytes()).await.unwrap();
        assert_eq!(read_frame(&mut s).await.unwrap().code, ErrorCode::UnsupportedVersion as u16);

        // Unknown op and malformed body: an error answer, and the connection stays usable.
        let mut s = raw_tls(&broker).await;
        s.write_all(&hello_frame().to_bytes()).await.unwrap();
        assert_eq!(read_frame(&mut s).await.unwrap().code, 0);
        s.write_all(&Frame { kind: Kind::Request, request_id: 2, code: 999, body: bytes::Bytes::new() }.to_bytes()).await.unwrap();
        assert_eq!(read_frame(&mut s).await.unwrap().code, ErrorCode::UnknownOp as u16);
        s.write_all(
            &Frame { kind: Kind::Request, request_id: 3, code: Op::Pull as u16, body: bytes::Bytes::from_static(b"\x05") }.to_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(read_frame(&mut s).await.unwrap().code, ErrorCode::Malformed as u16);
        let route = wasmq_protocol::Request::Route(wasmq_protocol::RouteRequest { topic: "t".into() });
        s.write_all(&Frame { kind: Kind::Request, request_id: 4, code: Op::Route as u16, body: route.encode() }.to_bytes()).await.unwrap();
        let f = read_frame(&mut s).await.unwrap();
        assert_eq!((f.request_id, f.code), (4, 0), "still serving this connection");

        // An oversized frame: refused from its length field, then the connection is closed.
        s.write_all(&(64u32 << 20).to_le_bytes()).await.unwrap();
        let f = read_frame(&mut s).await.expect("an error answer");
        assert_eq!(f.code, ErrorCode::FrameTooLarge as u16);
        assert!(read_frame(&mut s).await.is_none());

        // Unknown topic, oversized message, bad queue: clear error codes.
        let producer = Producer::new(broker.connect().await, "g").with_retries(0);
        let e = producer.send("nope", OutgoingMessage::new(b"x".to_vec())).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopic));
        let e = producer.send("t", OutgoingMessage::new(vec![0u8; 65537])).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
        let consumer = PullConsumer::new(broker.connect().await);
        assert_eq!(consumer.pull("t", 7, 0, 1, Duration::ZERO).await.unwrap_err().code(), Some(ErrorCode::InvalidQueue));

        // The admin API refuses a missing or wrong token.
        let wrong = wasmq_client::Admin::new(&broker.admin_listen, &broker.ca, "wrong-token-wrong-token").unwrap();
        assert!(matches!(wrong.list_topics().await, Err(wasmq_client::ClientError::Admin { status: 401, .. })));

        // A flood of idle connections does not stop service.
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(&broker.listen).await.unwrap());
        }
        let r = producer.send("t", OutgoingMessage::new(b"still here".to_vec())).await.unwrap();
        assert_eq!(r.queue_offset, 0);
        drop(idle);

        // A client that sends pulls and never reads the answers: others are served meanwhile.
        let mut s = raw_tls(&broker).await;
        s.write_all(&hello_frame().to_bytes()).await.unwrap();
        let big = Producer::new(broker.connect().await, "g");
        for _ in 0..40 {
            big.send("t", OutgoingMessage::new(vec![1u8; 60_000])).await.unwrap();
        }
        for id in 10..210u32 {
            let pull = wasmq_protocol::Request::Pull(wasmq_protocol::PullRequest {
                topic: "t".into(),
                queue_id: 0,
                offset: 0,
                max_messages: 1024,
                max_bytes: 8 << 20,
                wait_ms: 0,
                filter: None,
                group: None,
            });
            if s.write_all(&Frame { kind: Kind::Request, request_id: id, code: Op::Pull as u16, body: pull.encode() }.to_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let t = Instant::now();
        producer.send("t", OutgoingMessage::new(b"not blocked".to_vec())).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        let info = broker.admin().broker_info().await.unwrap();
        assert!(info.store_failure.is_none());
    });
    assert!(broker.stop().success());
}

#[test]
fn many_requests_in_flight_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        broker.admin().create_topic("mux", 4).await.unwrap();
        let producer = Arc::new(Producer::new(broker.connect().await, "g"));
        let handles: Vec<_> = (0..200).map(|i| producer.send_async("mux", OutgoingMessage::new(format!("{i}").into_bytes()))).collect();
        let mut ids = HashSet::new();
        for h in handles {
            assert!(ids.insert(h.await.unwrap().unwrap().message_id));
        }
        producer.send_one_way("mux", OutgoingMessage::new(b"fire and forget".to_vec())).await.unwrap();
        let consumer = PullConsumer::new(broker.connect().await);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut n = 0;
            for q in 0..4 {
                n += read_all(&consumer, "mux", q).await.len();
            }
            if n == 201 || Instant::now() > deadline {
                assert_eq!(n, 201);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn messages_are_found_by_id_key_and_position_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_ADMIN_READ_TOKEN", "read-only-token-0123456789")]);
    broker.cli(&["topic", "create", "orders", "--queues", "1"]);
    let out = broker.cli(&["send", "orders", "first", "second", "--key", "customer-7"]);
    let id = out.lines().next().and_then(|l| l.split(' ').nth(1)).expect("a message id").to_owned();
    let got = broker.cli(&["message", "get", &id]);
    assert!(got.contains("orders/0 @0") && got.contains("| first"), "{got}");
    let found = broker.cli(&["message", "find", "orders", "--key", "customer-7"]);
    assert_eq!(found.lines().count(), 2, "{found}");
    let page = broker.cli(&["message", "browse", "orders", "0", "--offset", "1"]);
    assert!(page.contains("| second") && !page.contains("| first") && page.contains("next offset 2"), "{page}");
    // The read-only token reads; it cannot create a topic.
    let out = std::process::Command::new(wasmq_tests::broker::cli_binary())
        .args(["--admin", &broker.admin_listen, "--token", "read-only-token-0123456789", "--ca"])
        .arg(&broker.ca)
        .args(["topic", "create", "other"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn console_operations_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_RETRY_DELAYS_MS", "100")]);
    // A topic with its own retention.
    let out = broker.cli(&["topic", "create", "jobs", "--queues", "1", "--retention-ms", "3600000"]);
    assert!(out.contains("retention 3600000 ms"), "{out}");
    assert!(broker.cli(&["topic", "list"]).contains("jobs\t1 queues, retention 3600000 ms"));
    // The cluster as this broker sees it (no name servers: its own set).
    let brokers = broker.cli(&["cluster", "brokers"]);
    assert!(brokers.contains("this broker set only (no name servers)") && brokers.contains(" master "), "{brokers}");
    // A member that answers "reconsume later": the message comes back once, then is dead.
    broker.cli(&["send", "jobs", "poison"]);
    broker.cli(&["consume", "jobs", "--group", "workers", "--reconsume-later", "--max-reconsume-times", "1", "--count", "2"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker.cli(&["group", "dlq", "workers"]).contains("poison") {
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(100));
    }
    // All dead letters back on their topic.
    assert!(broker.cli(&["group", "resend", "workers", "--all"]).contains("resent 1 dead letters"));
    assert!(broker.cli(&["topic", "describe", "jobs"]).contains("0\t0\t2"), "the message is back on jobs");
}

/// `bench produce` leaves its warm-up out of the figures: the messages it reports plus the
/// warm-up's are what the topic holds, less at most what was in flight when the warm-up ended.
#[test]
fn bench_produce_counts_only_what_follows_the_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let (batch, in_flight) = (4u64, 2u64);
    let out = broker.cli(&[
        "bench",
        "produce",
        "--no-ceiling",
        "--warmup",
        "1",
        "--duration",
        "1",
        "--queues",
        "2",
        "--batch",
        &batch.to_string(),
        "--in-flight",
        &in_flight.to_string(),
    ]);
    let number = |prefix: &str| -> u64 {
        let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in {out}"));
        line[prefix.len()..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let (warm, measured) = (number("warm-up: "), number("produced "));
    assert!(warm > 0 && measured > 0, "{out}");
    let describe = broker.cli(&["topic", "describe", "bench"]);
    let stored: u64 = describe
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() >= 3 && cols[0].parse::<u32>().is_ok()).then(|| cols[2].parse::<u64>().unwrap())
        })
        .sum();
    assert!(stored >= warm + measured && stored <= warm + measured + batch * in_flight, "stored {stored}, {out}");
}

/// `bench grpc` through the real broker's gRPC port: its consumer receives and acknowledges
/// every message its producer stored, once each (the figure it reports is that count).
#[test]
fn bench_grpc_receives_and_acks_every_message_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let out = broker.cli(&[
        "bench",
        "grpc",
        "--grpc",
        &broker.grpc_listen,
        "--no-native",
        "--warmup",
        "1",
        "--duration",
        "1",
        "--queues",
        "2",
        "--in-flight",
        "16",
    ]);
    let sent = out.lines().find(|l| l.starts_with("grpc send: ")).unwrap_or_else(|| panic!("no send line in {out}"));
    assert!(sent["grpc send: ".len()..].split(' ').next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0), "{out}");
    let line = out.lines().find(|l| l.starts_with("grpc receive + ack: ")).unwrap_or_else(|| panic!("no receive line in {out}"));
    let received: u64 =
        line.split('(').nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    let rt = wasmq_tests::runtime();
    let stored: u64 = rt.block_on(broker.admin().describe_topic("bench-grpc")).unwrap().queues.iter().map(|q| q.max_offset).sum();
    assert!(stored > 0);
    assert_eq!(received, stored, "every stored message received and acknowledged once: {out}");
}

/// `bench e2e` through the real broker: every message sent in the measured second is delivered
/// and counted once, and the host's steal is reported where the system accounts it.
#[test]
fn bench_e2e_counts_the_measured_second_and_reports_host_steal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let rate = 2000u64;
    let out = broker.cli(&["bench", "e2e", "--rate", &rate.to_string(), "--duration", "1", "--warmup", "1", "--queues", "2"]);
    let line = out.lines().find(|l| l.starts_with("e2e at ")).unwrap_or_else(|| panic!("no e2e line in {out}"));
    // "(N samples of M sent after ...)": every message sent in the measured second is one
    // sample, exactly — none missed, none counted twice.
    let words: Vec<&str> = line.split('(').nth(1).unwrap_or_else(|| panic!("{line}")).split(' ').collect();
    let (samples, sent): (u64, u64) = match words[..] {
        [n, "samples", "of", m, "sent", ..] => (n.parse().unwrap(), m.parse().unwrap()),
        _ => panic!("{line}"),
    };
    assert_eq!(samples, sent, "{out}");
    // Sends are due by elapsed time and go out once per millisecond tick: a second's worth,
    // give or take what a stalled sender (a busy test machine) moves across the second's edges.
    assert!(sent.abs_diff(rate) <= rate / 4, "{sent} sent in the measured second at {rate} msgs/s: {out}");
    assert!(out.lines().any(|l| l.starts_with("late: ")), "{out}");
    let steal_reported = std::fs::read_to_string("/proc/stat")
        .is_ok_and(|s| s.lines().next().is_some_and(|l| l.starts_with("cpu ") && l.split_whitespace().count() > 8));
    assert_eq!(out.lines().any(|l| l.starts_with("host steal: ")), steal_reported, "{out}");
}

/// The connection limit and handshake deadline as docs/operations.md states them.
const CONNECTIONS_MAX: usize = 1024;
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How late past a deadline a busy test machine may close a connection.
const CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// Lets this process open more than the connection limit's worth of sockets.
fn raise_open_files_limit(needed: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur >= needed, "the hard open-file limit {} is below the {needed} sockets this test opens", lim.rlim_cur);
}

/// Waits until `s` is closed by the broker (EOF or reset); returns when, or `None` if it sent
/// data instead.
async fn closed_at(mut s: impl AsyncReadExt + Unpin) -> Option<Instant> {
    let mut b = [0u8; 256];
    match s.read(&mut b).await {
        Ok(0) | Err(_) => Some(Instant::now()),
        Ok(_) => None,
    }
}

/// The default limits on connections: past 1024 open, a new one is closed at once; one that
/// never starts TLS, and one that finishes TLS but never sends Hello, are closed 10 s after they
/// came (not before), which frees their places.
#[test]
fn connections_past_the_limit_are_closed_and_silent_ones_at_the_deadline() {
    raise_open_files_limit(2 * CONNECTIONS_MAX as u64 + 256);
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        // One connection finishes TLS and sends nothing; the rest of the limit never start TLS.
        let tls_at = Instant::now();
        let no_hello = tokio::spawn(closed_at(raw_tls(&broker).await));
        let mut silent = Vec::new();
        for i in 1..CONNECTIONS_MAX {
            let at = Instant::now();
            let tcp = tokio::net::TcpStream::connect(&broker.listen).await.unwrap();
            silent.push(tokio::spawn(async move { (at, closed_at(tcp).await) }));
            if i % 64 == 0 {
                // Let the broker accept what is queued (the listen backlog is finite).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One more: over the limit, closed at once.
        let over = tokio::net::TcpStream::connect(&broker.listen).await.unwrap();
        let t = Instant::now();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), closed_at(over)).await.expect("the connection past the limit is closed at once");
        assert!(closed.is_some(), "closed, not answered");
        println!("connection {} closed after {:?}", CONNECTIONS_MAX + 1, t.elapsed());
        // The silent ones: each closed at its deadline, none before.
        let mut latest = Duration::ZERO;
        for s in silent {
            let (at, closed) = s.await.unwrap();
            let after = closed.expect("closed, not answered") - at;
            assert!(after >= HANDSHAKE_DEADLINE, "a connection without TLS was closed {after:?} after it came");
            assert!(after <= HANDSHAKE_DEADLINE + CLOSE_MARGIN, "a connection without TLS was closed only {after:?} after it came");
            latest = latest.max(after);
        }
        let after = no_hello.await.unwrap().expect("closed, not answered") - tls_at;
        assert!(after >= HANDSHAKE_DEADLINE && after <= HANDSHAKE_DEADLINE + CLOSE_MARGIN, "no Hello: closed {after:?} after TLS began");
        println!(
            "{} silent connections closed at most {latest:?} after they came; the one without Hello after {after:?}",
            CONNECTIONS_MAX - 1
        );
        // Their places are free again.
        let p = Producer::new(broker.connect().await, "p");
        broker.admin().create_topic("after", 1).await.unwrap();
        p.send("after", OutgoingMessage::new(&b"in"[..])).await.unwrap();
    });
}

/// A client that stops reading is dropped once the broker has waited 30 s to write to it, not
/// before (docs/operations.md).
#[test]
fn a_client_that_stops_reading_is_dropped_after_30_s() {
    const WRITE_DEADLINE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        broker.admin().create_topic("big", 1).await.unwrap();
        let p = Producer::new(broker.connect().await, "p");
        for _ in 0..32 {
            p.send_batch("big", (0..4).map(|_| OutgoingMessage::new(vec![b'b'; 32 << 10])).collect()).await.unwrap();
        }
        let mut s = raw_tls(&broker).await;
        s.write_all(&hello_frame().to_bytes()).await.unwrap();
        assert_eq!(read_frame(&mut s).await.expect("Hello answered").code, 0);
        // 200 pulls of 4 MiB each, never read: far more than the sockets' buffers hold.
        let pull = wasmq_protocol::Request::Pull(wasmq_protocol::PullRequest {
            topic: "big".into(),
            queue_id: 0,
            offset: 0,
            max_messages: 1024,
            max_bytes: 4 << 20,
            wait_ms: 0,
            filter: None,
            group: None,
        });
        let mut out = bytes::BytesMut::new();
        for id in 0..200u32 {
            Frame { kind: Kind::Request, request_id: 10 + id, code: Op::Pull as u16, body: pull.encode() }.encode(&mut out);
        }
        s.write_all(&out).await.unwrap();
        let sent_at = Instant::now();
        // Watch for the broker's close without reading (reading would let it write again).
        let fd = std::os::fd::AsRawFd::as_raw_fd(s.get_ref().0);
        let closed_after = loop {
            let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
            // SAFETY: poll on one live descriptor of ours, with a zero timeout.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                break sent_at.elapsed();
            }
            assert!(
                sent_at.elapsed() < WRITE_DEADLINE + Duration::from_secs(15),
                "the broker never dropped the client that stopped reading"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(closed_after >= WRITE_DEADLINE, "dropped after {closed_after:?}, before the 30 s a client is given");
        assert!(closed_after <= WRITE_DEADLINE + CLOSE_MARGIN, "dropped only after {closed_after:?}");
        println!("a client that stopped reading was dropped {closed_after:?} after its last request");
        // The broker serves others meanwhile and after.
        p.send("big", OutgoingMessage::new(&b"still here"[..])).await.unwrap();
    });
}

/// The CLI's errors say the cause first, and never with a stack trace: a CA file that is not
/// there, a broker whose certificate another CA signed, no broker at the address.
#[test]
fn cli_errors_name_the_cause_without_a_stack_trace() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(wasmq_tests::broker::cli_binary())
            .current_dir(elsewhere.path())
            .env("RUST_BACKTRACE", "1")
            .args(args)
            .output()
            .expect("run wasmq");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("backtrace") && !err.contains("Caused by"), "a user error with a stack trace: {err}");
        err
    };
    // Run outside the broker's folder: the default --ca is not there.
    let err = run(&["--server", &broker.listen, "send", "t", "x"]);
    assert!(err.starts_with("error: no such file: data/tls/ca.pem — run from the folder"), "{err}");
    // Another CA (the broker's own certificate is a leaf, not the CA that signed it).
    let other = dir.path().join("tls").join("server.pem");
    let err = run(&["--server", &broker.listen, "--ca", other.to_str().unwrap(), "send", "t", "x"]);
    assert!(err.starts_with(&format!("error: the certificate of the broker at {} is not signed by", broker.listen)), "{err}");
    // Nobody listening.
    let err = run(&["--server", "127.0.0.1:1", "--ca", broker.ca.to_str().unwrap(), "send", "t", "x"]);
    assert!(err.starts_with("error: no broker is listening on 127.0.0.1:1"), "{err}");
}

/// The broker's log written to a file (not a terminal) is plain text: no colour codes.
#[test]
fn a_redirected_log_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("broker.log");
    let mut child = std::process::Command::new(wasmq_tests::broker::broker_binary())
        .env("WASMQ_DATA_DIR", dir.path().join("data"))
        .env("WASMQ_LISTEN", "127.0.0.1:0")
        .env("WASMQ_ADMIN_LISTEN", "127.0.0.1:0")
        .env("WASMQ_GRPC_LISTEN", "127.0.0.1:0")
        .env("WASMQ_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("INFO") {
        assert!(Instant::now() < deadline, "no INFO line logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a redirected log: {text:?}");
}

/// The CLI's reports as tables, or JSON with `--output json`; `message get` with properties; a
/// scheduled send said to be scheduled; `consume --group` broadcasting and orderly.
#[test]
fn cli_reports_tables_or_json_and_consumes_broadcast_or_orderly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "cli", "--queues", "1"]);
    let topics: serde_json::Value = serde_json::from_str(&broker.cli(&["--output", "json", "topic", "list"])).unwrap();
    assert_eq!(topics[0]["name"], "cli", "{topics}");
    let sent = broker.cli(&["send", "cli", "one", "--property", "color=blue"]);
    let id = sent.split_whitespace().nth(1).unwrap().to_owned();
    let got = broker.cli(&["message", "get", &id]);
    assert!(got.contains("properties={color=blue}"), "{got}");
    let got: serde_json::Value = serde_json::from_str(&broker.cli(&["--output", "json", "message", "get", &id])).unwrap();
    assert_eq!(got["properties"][0], serde_json::json!(["color", "blue"]), "{got}");
    broker.cli(&["send", "cli", "two", "three"]);
    let scheduled = broker.cli(&["send", "cli", "later", "--delay-ms", "60000"]);
    assert!(scheduled.starts_with("scheduled ") && scheduled.contains("due at") && !scheduled.contains("at offset"), "{scheduled}");
    let table = broker.cli(&["scheduled"]);
    assert!(table.starts_with("pending 1,") && table.contains("due within"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&broker.cli(&["--output", "json", "scheduled"])).unwrap();
    assert_eq!(json["pending"], 1, "{json}");
    let table = broker.cli(&["transactions"]);
    assert!(table.starts_with("committed 0,") && table.contains("producer group"), "{table}");
    // Broadcasting: each member gets every message, every time it runs.
    let bodies = |out: &str| -> Vec<String> { out.lines().map(|l| l.rsplit('\t').next().unwrap().to_owned()).collect() };
    for _ in 0..2 {
        let out = broker.cli(&["consume", "cli", "--group", "everyone", "--broadcast", "--count", "3"]);
        assert_eq!(bodies(&out), ["one", "two", "three"], "{out}");
    }
    // Orderly: the queue's messages in order, and the group goes on where it stopped.
    let out = broker.cli(&["consume", "cli", "--group", "in-order", "--orderly", "--count", "2"]);
    assert_eq!(bodies(&out), ["one", "two"], "{out}");
    let out = broker.cli(&["consume", "cli", "--group", "in-order", "--orderly", "--count", "1"]);
    assert_eq!(bodies(&out), ["three"], "{out}");
}

/// `/metrics` scraped while `wasmq bench produce` and a consumer run: the counters only grow, and
/// at the end they match what the bench counted and what the topic holds; the request counter
/// and latency histogram count the sends.
#[test]
fn metrics_counters_move_with_the_load_and_match_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    let rt = runtime();
    let sample = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap_or_else(|_| panic!("{name}: {v}")) as u64)
    };
    // One message per request: many requests, and a run long enough to scrape mid-way.
    let mut bench = broker.cli_command(&[
        "bench",
        "produce",
        "--no-ceiling",
        "--batch",
        "1",
        "--in-flight",
        "64",
        "--count",
        "100000",
        "--duration",
        "120",
    ]);
    let (bench, scrapes) = rt.block_on(async {
        let admin = broker.admin();
        let bench = tokio::task::spawn_blocking(move || bench.output().expect("run wasmq bench"));
        let mut scrapes = Vec::new();
        while !bench.is_finished() {
            let text = admin.metrics().await.unwrap();
            scrapes.push((
                sample(&text, "wasmq_messages_in_total{topic=\"bench\"}"),
                sample(&text, "wasmq_requests_total{protocol=\"native\",op=\"send\",outcome=\"ok\"}"),
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (bench.await.unwrap(), scrapes)
    });
    let out = String::from_utf8_lossy(&bench.stdout).into_owned();
    assert!(bench.status.success(), "{out}{}", String::from_utf8_lossy(&bench.stderr));
    assert!(scrapes.len() >= 3, "scraped during the run: {scrapes:?}");
    assert!(scrapes.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "counters never go back: {scrapes:?}");
    assert!(scrapes.iter().any(|s| s.0 > 0 && s.0 < 100_000), "a scrape mid-run saw the count grow: {scrapes:?}");
    rt.block_on(async {
        let text = broker.admin().metrics().await.unwrap();
        let stored: u64 = broker.admin().describe_topic("bench").await.unwrap().queues.iter().map(|q| q.max_offset).sum();
        let counted = sample(&text, "wasmq_messages_in_total{topic=\"bench\"}");
        assert_eq!(counted, stored, "messages in: the counter and the topic agree");
        assert!(stored >= 100_000 && stored.abs_diff(100_000) * 100 <= 100_000, "within 1 % of the bench's 100,000: {stored}");
        assert_eq!(sample(&text, "wasmq_requests_total{protocol=\"native\",op=\"send\",outcome=\"ok\"}"), stored, "one send per message");
        assert_eq!(sample(&text, "wasmq_in_bytes_total{topic=\"bench\"}"), stored * 1024, "1 KiB bodies");
        let sends = sample(&text, "wasmq_requests_total{protocol=\"native\",op=\"send\",outcome=\"ok\"}");
        assert_eq!(sample(&text, "wasmq_request_duration_seconds_count{protocol=\"native\",op=\"send\"}"), sends);
        assert!(sends > 0, "{text}");
        // Read it all back: the out counter follows.
        let consumer = PullConsumer::new(broker.connect().await);
        let mut pulled = 0;
        for q in 0..8 {
            pulled += read_all(&consumer, "bench", q).await.len() as u64;
        }
        let text = broker.admin().metrics().await.unwrap();
        assert_eq!(sample(&text, "wasmq_messages_out_total{topic=\"bench\",group=\"\"}"), pulled, "{text}");
        assert!(text.contains("wasmq_connections{protocol=\"native\"}"), "{text}");
        assert!(text.contains("wasmq_store_append_duration_seconds_bucket"), "{text}");
        assert!(sample(&text, "wasmq_store_fsync_duration_seconds_count") > 0, "the flusher's fsyncs are timed: {text}");
    });
}
