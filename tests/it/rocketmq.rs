//! RocketMQ 5 compatibility: the official Python client (PyPI `rocketmq-python-client`, unchanged)
//! against the real broker's gRPC port over TLS, each outcome checked through wasmq's own
//! client — an independent reader of the same queues.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmq_client::{Connection, PulledMessage, queue_for_key};
use wasmq_tests::broker::{Broker, Namesrv};
use wasmq_tests::rocketmq::scenario;

const QUEUES: u32 = 4;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn body(m: &PulledMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

/// Every message of every queue of `topic`, from the start, with its queue.
async fn drain(conn: &Connection, topic: &str) -> Vec<(u32, PulledMessage)> {
    wasmq_tests::drain(conn, topic, QUEUES).await
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Normal, FIFO and delayed messages sent by the Python producer are stored as sent — tag,
/// keys, user property, message id — FIFO ones in their group's queue (the same queue a native
/// producer's ordering key picks) in order, the delayed one held until its time.
#[test]
fn a_python_producers_messages_of_each_type_reach_a_native_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-orders", "--queues", &QUEUES.to_string()]);
    let receipts = scenario(&broker.grpc_listen, &broker.ca, "send", &["rmq-orders"]);
    let rt = wasmq_tests::runtime();
    let conn = rt.block_on(broker.connect());
    let stored = rt.block_on(drain(&conn, "rmq-orders"));
    let by_body: HashMap<String, &(u32, PulledMessage)> = stored.iter().map(|s| (body(&s.1), s)).collect();

    let normal = receipts.iter().find(|r| r["type"] == "NORMAL").unwrap();
    let (_, m) = by_body["normal-1"];
    assert_eq!(m.message.unique_id, str_of(normal, "message_id"));
    assert_eq!((m.message.tags.as_deref(), m.message.keys.as_slice()), (Some("paid"), &["order-1".to_owned()][..]));
    assert_eq!(m.message.properties, vec![("region".to_owned(), "eu".to_owned())]);
    // The queue is the broker's choice (the client's receipt names the queue it meant).
    assert_eq!(m.queue_offset, normal["offset"].as_u64().unwrap());

    for group in ["order-7", "order-8"] {
        let queue = queue_for_key(group, QUEUES);
        let mut in_queue: Vec<&(u32, PulledMessage)> = stored.iter().filter(|(_, m)| body(m).starts_with(group)).collect();
        in_queue.sort_by_key(|(_, m)| m.queue_offset);
        assert!(in_queue.iter().all(|(q, _)| *q == queue), "{group}: all in queue {queue}: {in_queue:?}");
        let order: Vec<String> = in_queue.iter().map(|(_, m)| body(m)).collect();
        assert_eq!(order, (0..3).map(|i| format!("{group}-{i}")).collect::<Vec<_>>());
        assert!(in_queue.iter().all(|(_, m)| m.message.ordering_key.as_deref() == Some(group)));
    }

    let delay = receipts.iter().find(|r| r["type"] == "DELAY").unwrap();
    let deliver_at = delay["deliver_at_ms"].as_u64().unwrap();
    assert!(!by_body.contains_key("delay-1") || now_ms() >= deliver_at, "the delayed message was readable before its time");
    let started = Instant::now();
    let delayed = loop {
        if let Some((_, m)) = rt.block_on(drain(&conn, "rmq-orders")).into_iter().find(|(_, m)| body(m) == "delay-1") {
            break m;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the delayed message never arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(delayed.store_ms >= deliver_at, "delivered at {} before its time {deliver_at}", delayed.store_ms);
    assert_eq!(delayed.message.unique_id, str_of(delay, "message_id"));
    // Recalled with the handle its send returned: never delivered, though due with delay-1.
    let recalled = receipts.iter().find(|r| r["type"] == "RECALLED").unwrap();
    assert_eq!(recalled["recalled"], recalled["message_id"], "{recalled}");
    let again = receipts.iter().find(|r| r["type"] == "RECALLED AGAIN").unwrap();
    assert!(str_of(again, "error").contains("delivered already, recalled"), "{again}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!rt.block_on(drain(&conn, "rmq-orders")).iter().any(|(_, m)| body(m) == "recall-me"), "a recalled message was delivered");
    let scheduled = rt.block_on(broker.admin().scheduled()).unwrap();
    assert_eq!((scheduled.pending, scheduled.recalled), (0, 1), "{scheduled:?}");
}

/// Transactions from the Python producer: a commit is delivered, a rollback is not, and the two
/// it leaves open are settled by its checker when the broker asks over the Telemetry stream
/// (commit delivered, rollback not).
#[test]
fn a_python_producers_transactions_commit_roll_back_and_answer_check_backs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", "500")]);
    broker.cli(&["topic", "create", "rmq-tx", "--queues", &QUEUES.to_string()]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "transaction", &["rmq-tx"]);
    let checked = lines.iter().find_map(|l| l.get("checked")).expect("the checker's report");
    assert_eq!(checked, &serde_json::json!(["check-commit", "check-rollback"]), "the broker asked about exactly the two left open");
    let sent: HashMap<&str, &Value> = lines.iter().filter(|l| l["type"] == "TRANSACTION").map(|l| (str_of(l, "body"), l)).collect();
    assert_eq!(sent.len(), 4);
    let rt = wasmq_tests::runtime();
    let conn = rt.block_on(broker.connect());
    let started = Instant::now();
    loop {
        let mut bodies: Vec<String> = rt.block_on(drain(&conn, "rmq-tx")).iter().map(|(_, m)| body(m)).collect();
        bodies.sort();
        if bodies == ["check-commit", "tx-commit"] {
            break;
        }
        assert!(bodies.len() <= 2 && bodies.iter().all(|b| b.ends_with("commit")), "only the committed two may be delivered: {bodies:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "committed transactions missing: {bodies:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered = rt.block_on(drain(&conn, "rmq-tx"));
    for (_, m) in &delivered {
        assert_eq!(m.message.unique_id, str_of(sent[body(m).as_str()], "message_id"), "the committed copy keeps the message id");
    }
    // Nothing is left undecided: every transaction ended (two of them by the check-back).
    let t = rt.block_on(broker.admin().transactions()).unwrap();
    assert_eq!(t.pending.iter().map(|p| p.pending).sum::<u64>(), 0, "{t:?}");
}

/// A Python SimpleConsumer with a tag filter: it receives only the tagged messages, hidden from
/// it while in flight; acknowledged ones (one after renewing its invisible time, with the new
/// handle) are done for the group; the one it leaves comes back after its invisible time with
/// delivery attempt 2; at the end the group's committed offsets leave no lag.
#[test]
fn a_python_simple_consumer_receives_acks_renews_and_gets_the_unacked_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-simple", "--queues", &QUEUES.to_string()]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "simple", &["rmq-simple"]);
    let step = |s: &str| lines.iter().filter(|l| l["step"] == s).collect::<Vec<_>>();
    let first = step("first");
    let mut bodies: Vec<&str> = first.iter().map(|l| str_of(l, "body")).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["s-0", "s-1", "s-2", "s-3"], "each tagged message once, the untagged none: {first:?}");
    assert!(first.iter().all(|l| l["tag"] == "a" && l["attempt"] == 1), "{first:?}");
    let again = step("again");
    assert_eq!(again.len(), 1, "only the unacknowledged one comes back: {again:?}");
    assert_eq!((str_of(again[0], "body"), again[0]["attempt"].as_u64()), ("s-2", Some(2)));
    let sent_id = first.iter().find(|l| l["body"] == "s-2").map(|l| str_of(l, "message_id")).unwrap();
    assert_eq!(str_of(again[0], "message_id"), sent_id, "redelivered with the same message id");
    // Everything of the topic is acknowledged or passed over by the filter: no lag.
    wait_no_lag(&broker, "rmq-simple", "rmq-simple");
}

/// Waits until `group` has committed every queue of `topic` with no lag.
fn wait_no_lag(broker: &Broker, group: &str, topic: &str) {
    let rt = wasmq_tests::runtime();
    let started = Instant::now();
    loop {
        let detail = rt.block_on(broker.admin().describe_group(group)).unwrap();
        let queues: Vec<_> = detail.queues.iter().filter(|q| q.topic == topic).collect();
        if queues.len() as u32 == QUEUES && queues.iter().all(|q| q.lag == 0) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "group {group} still lags on {topic}: {detail:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Python PushConsumer: messages it consumes are acknowledged once — one of them sent by the
/// native CLI, read with its tag and property — and one it keeps failing is retried with the
/// backoff the broker's Settings gave (its retry delays), delivered under its own topic each
/// time with the attempt counted up, and after the broker's maximum it ends in the group's
/// dead-letter topic.
#[test]
fn a_python_push_consumer_retries_a_failing_message_into_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    // 2 reconsumes: 3 deliveries, then the DLQ.
    let broker = Broker::start(dir.path(), &[("WASMQ_RETRY_DELAYS_MS", "200,400"), ("WASMQ_MAX_RECONSUME_TIMES", "2")]);
    broker.cli(&["topic", "create", "rmq-push", "--queues", &QUEUES.to_string()]);
    broker.cli(&["send", "rmq-push", "ok-native", "--tags", "blue", "--property", "origin=cli"]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "push", &["rmq-push", "3", "4"]);
    let consumed: Vec<(&str, u64, &str)> = lines
        .iter()
        .filter(|l| l["step"] == "consumed")
        .map(|l| (str_of(l, "body"), l["attempt"].as_u64().unwrap(), str_of(l, "topic")))
        .collect();
    for ok in ["ok-0", "ok-1", "ok-2", "ok-native"] {
        let seen: Vec<_> = consumed.iter().filter(|c| c.0 == ok).collect();
        assert_eq!(seen, [&(ok, 1, "rmq-push")], "{ok} consumed once: {consumed:?}");
    }
    let native = lines.iter().find(|l| l["body"] == "ok-native").unwrap();
    assert_eq!((&native["tag"], &native["properties"]["origin"]), (&serde_json::json!("blue"), &serde_json::json!("cli")), "{native}");
    let fails: Vec<_> = consumed.iter().filter(|c| c.0 == "fail-0").map(|c| (c.1, c.2)).collect();
    assert_eq!(fails, [(1, "rmq-push"), (2, "rmq-push"), (3, "rmq-push")], "three deliveries, then no more: {consumed:?}");
    let rt = wasmq_tests::runtime();
    let started = Instant::now();
    let dead = loop {
        let dead = rt.block_on(broker.admin().dead_letters("rmq-push")).unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the failing message never reached the dead-letter topic");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].body_preview.as_str(), dead[0].origin_topic.as_str()), ("fail-0", "rmq-push"));
    wait_no_lag(&broker, "rmq-push", "rmq-push");
}

/// A FIFO consumer group (set through the CLI) and two Python SimpleConsumers: six message
/// groups of ten messages each are processed in order, one message of a message group at a
/// time across both consumers (the next starts only after the previous one's processing
/// ended), both consumers get work, and a batch the first consumer abandons comes back in place
/// with delivery attempt 2, still in order.
#[test]
fn a_fifo_group_hands_each_message_group_out_in_order_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-fifo", "--queues", &QUEUES.to_string(), "--message-type", "FIFO"]);
    assert!(broker.cli(&["group", "set", "rmq-fifo-g", "--fifo", "true"]).contains("fifo true"));
    let detail = wasmq_tests::runtime().block_on(broker.admin().describe_group("rmq-fifo-g")).unwrap();
    assert!(detail.fifo, "{detail:?}");
    let (groups, per_group) = (6, 10);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "fifo", &["rmq-fifo", "rmq-fifo-g", &groups.to_string(), &per_group.to_string()]);
    let abandoned: Vec<&str> = lines.iter().filter(|l| l.get("abandoned").is_some()).map(|l| str_of(l, "body")).collect();
    assert!(!abandoned.is_empty(), "the first consumer abandoned its first batch: {lines:?}");
    let processed: Vec<&Value> = lines.iter().filter(|l| l.get("consumer").is_some()).collect();
    for c in ["c1", "c2"] {
        assert!(processed.iter().any(|l| l["consumer"] == c), "{c} got no work: {processed:?}");
    }
    for g in 0..groups {
        let mut mine: Vec<&&Value> = processed.iter().filter(|l| l["group"] == format!("g{g}")).collect();
        mine.sort_by_key(|l| l["start"].as_u64());
        let order: Vec<&str> = mine.iter().map(|l| str_of(l, "body")).collect();
        let sent: Vec<String> = (0..per_group).map(|i| format!("g{g}:{i}")).collect();
        assert_eq!(order, sent, "message group g{g}: each once, in order");
        for w in mine.windows(2) {
            assert!(
                w[1]["start"].as_u64() >= w[0]["processed"].as_u64(),
                "g{g}: {} started before {} was processed: {w:?}",
                w[1]["body"],
                w[0]["body"]
            );
        }
        for l in &mine {
            let attempt = if abandoned.contains(&str_of(l, "body")) { 2 } else { 1 };
            assert_eq!(l["attempt"].as_u64(), Some(attempt), "{l}");
        }
    }
    wait_no_lag(&broker, "rmq-fifo-g", "rmq-fifo");
}

/// A receive with `auto_renew` (as the PushConsumer sends) and a 2 s invisible time: six
/// seconds later the message is still hidden from its group — the broker renewed it while the
/// client kept sending heartbeats — and the receipt handle of the first delivery still
/// acknowledges it.
#[test]
fn an_auto_renewed_receive_stays_hidden_and_keeps_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-renew", "--queues", &QUEUES.to_string()]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "renew", &["rmq-renew"]);
    let step = |s: &str| lines.iter().find(|l| l["step"] == s).unwrap_or_else(|| panic!("{s} missing: {lines:?}"));
    assert_eq!(step("received")["bodies"], serde_json::json!(["renew-me"]));
    assert_eq!(step("after 6 s")["bodies"], serde_json::json!([]), "renewed past its 2 s");
    assert_eq!(step("ack with the first handle")["code"], "OK");
    wait_no_lag(&broker, "rmq-renew", "rmq-renew");
}

/// A TLS connection to the gRPC port offering `alpn` (none: no ALPN), trusting the broker's CA.
async fn tls_to(broker: &Broker, alpn: Option<&[u8]>) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let pem = std::fs::read(&broker.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(&broker.grpc_listen).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(Result::unwrap).collect()
}

/// Bad input on the gRPC port: garbage after the TLS handshake is dropped, HTTP/1 is told the
/// port speaks gRPC over HTTP/2, and requests a proper client would not send — an unknown topic,
/// a body over the limit, receipt handles that are stale, garbled or another group's, an RPC the
/// broker does not serve — each get their RocketMQ status (or gRPC code); the broker serves on.
#[test]
fn bad_input_on_the_grpc_port_gets_a_clear_answer_and_the_broker_stays_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_MESSAGE_BYTES_MAX", "65536")]);
    broker.cli(&["topic", "create", "rmq-bad", "--queues", &QUEUES.to_string()]);
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let mut garbage = tls_to(&broker, Some(b"h2")).await;
        garbage.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64)).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "garbage: the connection is closed, not left hanging");
        let mut http1 = tls_to(&broker, None).await;
        http1.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), http1.read_to_end(&mut answer)).await.unwrap().ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
        assert!(answer.contains("gRPC over HTTP/2"), "{answer}");
    });
    broker.cli(&["topic", "create", "rmq-bad-fifo", "--queues", "2", "--message-type", "fifo"]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "errors", &["rmq-bad", "65536", "rmq-bad-fifo"]);
    let code = |case: &str| {
        let l = lines.iter().find(|l| l["case"] == case).unwrap_or_else(|| panic!("{case} missing: {lines:?}"));
        (str_of(l, "code").to_owned(), str_of(l, "message").to_owned())
    };
    assert_eq!(code("unknown topic").0, "TOPIC_NOT_FOUND");
    assert!(code("unknown topic").1.contains("no-such-topic"));
    assert_eq!(code("oversized body").0, "MESSAGE_BODY_TOO_LARGE", "{:?}", code("oversized body"));
    let (mismatch, why) = code("normal message to a FIFO topic");
    assert_eq!(mismatch, "MESSAGE_PROPERTY_CONFLICT_WITH_TYPE", "{why}");
    assert!(why.contains("rmq-bad-fifo takes FIFO messages, not NORMAL"), "{why}");
    let route = lines.iter().find(|l| l["case"] == "route of a FIFO topic").expect("route");
    assert_eq!(route["accepts"], serde_json::json!(["FIFO"]), "{route}");
    // The native protocol keeps the same rule: an ordering key makes a FIFO message.
    let plain = broker.cli_command(&["send", "rmq-bad-fifo", "plain"]).output().unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("takes FIFO messages, not NORMAL"), "{plain:?}");
    broker.cli(&["send", "rmq-bad-fifo", "ordered", "--ordering-key", "k"]);
    assert!(broker.cli(&["topic", "update", "rmq-bad-fifo", "--message-type", "mixed"]).contains("takes MIXED messages"));
    broker.cli(&["send", "rmq-bad-fifo", "plain"]);
    assert_eq!(code("a message to receive").0, "OK");
    assert_eq!(code("receipt handle of another group").0, "INVALID_RECEIPT_HANDLE");
    assert_eq!(code("first ack").0, "OK");
    assert_eq!(code("stale receipt handle").0, "INVALID_RECEIPT_HANDLE");
    assert_eq!(code("garbage receipt handle").0, "INVALID_RECEIPT_HANDLE");
    assert!(code("garbage receipt handle").1.contains("not-a-handle"));
    assert_eq!(code("PullMessage").0, "UNIMPLEMENTED");
    // Still serving: the producers' scenario on the same broker.
    let receipts = scenario(&broker.grpc_listen, &broker.ca, "send", &["rmq-bad"]);
    assert!(receipts.iter().any(|r| r["type"] == "NORMAL"));
}

/// A broker SIGKILLed (and restarted on the same ports) while a Python SimpleConsumer works
/// through 300 messages (listed in the admin API as a gRPC member of its group, with its
/// language and version): the consumer carries on by itself, every message is acknowledged in
/// the end (in the broker's view too: no lag left; an ack whose answer the kill cut off may
/// have been done, so its message need not come back), each one it left unacknowledged comes back, and none whose ack was answered OK is
/// delivered again — the in-flight state is recovered, not only the offsets saved every 5 s.
#[test]
fn a_python_simple_consumer_carries_on_through_a_broker_sigkill() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-restart", "--queues", &QUEUES.to_string()]);
    let rt = wasmq_tests::runtime();
    let producer = wasmq_client::Producer::new(rt.block_on(broker.connect()), "rmq-restart-producer");
    for i in 0..N {
        rt.block_on(producer.send("rmq-restart", wasmq_client::OutgoingMessage::new(format!("r-{i}")))).unwrap();
    }
    let running = wasmq_tests::rocketmq::start(&broker.grpc_listen, &broker.ca, "restart", &["rmq-restart", &N.to_string()]);
    let mut seen: Vec<Value> = Vec::new();
    // On silence, say what came last (empty receives print a line of their own, with the time).
    let next = |seen: &mut Vec<Value>| match running.lines.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => seen.push(v),
        Err(_) => panic!("the scenario went silent for 60 s; its last lines: {:?}", &seen[seen.len().saturating_sub(8)..]),
    };
    while seen.iter().filter(|l| l["step"] == "received").count() < N / 3 {
        next(&mut seen);
    }
    // The admin API lists the Python consumer as a member of its group, as it says it is.
    let group = rt.block_on(broker.admin().describe_group("rmq-restart")).unwrap();
    let member = group.members.iter().find(|m| m.protocol == "grpc").unwrap_or_else(|| panic!("no gRPC member: {group:?}"));
    assert_eq!((member.language.as_str(), member.version.as_str()), ("PYTHON", "5.1.2"), "{member:?}");
    let described = broker.cli(&["group", "describe", "rmq-restart"]);
    assert!(described.contains("(grpc PYTHON 5.1.2): every queue, message by message"), "{described}");
    let broker = broker.kill_and_restart();
    let killed_at = seen.len();
    while !seen.last().is_some_and(|l| l["step"] == "done") {
        next(&mut seen);
    }
    running.wait();
    // The broker's own view: nothing of the group left unacknowledged, in the topic or in the
    // group's retry topic (a committed offset is the lowest unacknowledged one).
    let group = rt.block_on(broker.admin().describe_group("rmq-restart")).unwrap();
    let pending: Vec<_> = group.queues.iter().filter(|q| q.lag > 0).collect();
    assert!(pending.is_empty(), "the broker holds messages of the group unacknowledged: {pending:?}");
    drop(broker);
    let received: Vec<&Value> = seen.iter().filter(|l| l["step"] == "received").collect();
    let acked: std::collections::HashSet<&str> = received.iter().filter(|l| l["acked"] == true).map(|l| str_of(l, "body")).collect();
    // An ack whose call failed as the broker died may have reached it first: that message is
    // done and never comes back. Such messages are settled by the broker's view above.
    let uncertain: Vec<&str> = seen.last().unwrap()["uncertain"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let history = |body: &str| seen.iter().filter(|l| l["body"] == body).collect::<Vec<_>>();
    for body in (0..N).map(|i| format!("r-{i}")).filter(|b| !acked.contains(b.as_str())) {
        assert!(uncertain.contains(&body.as_str()), "{body} was never acknowledged: {:?}", history(&body));
    }
    assert!(uncertain.len() <= 1, "only an ack in flight at the kill may go unanswered: {uncertain:?}");
    assert_eq!(acked.len() + uncertain.len(), N, "every message acknowledged in the end");
    for left in (0..N).step_by(10).map(|i| format!("r-{i}")) {
        let deliveries = received.iter().filter(|l| l["body"] == left.as_str()).count();
        assert!(deliveries >= 2, "{left} was left unacknowledged and must come back ({deliveries} deliveries)");
    }
    let mut acked_at: HashMap<&str, usize> = HashMap::new();
    for (i, l) in received.iter().enumerate() {
        let body = str_of(l, "body");
        if let Some(at) = acked_at.get(body) {
            panic!("{body} was acknowledged (delivery {at}) and delivered again (delivery {i}): {l}");
        }
        if l["acked"] == true {
            acked_at.insert(body, i);
        }
    }
    let after_kill = seen[killed_at..].iter().filter(|l| l["step"] == "received").count();
    assert!(after_kill > 0, "deliveries went on after the restart");
    let first = received.iter().filter(|l| l["attempt"].as_u64() == Some(1)).count();
    eprintln!(
        "through a SIGKILL: {} deliveries of {N} messages ({} first deliveries), {} failed calls while the broker was down",
        received.len(),
        first,
        seen.iter().filter(|l| l["step"] == "error").count()
    );
}

/// Once the broker has users, a Python producer signing with a user's access key (its name) and
/// secret sends where a policy allows it; a wrong secret, an unknown access key or no key at
/// all is refused with gRPC UNAUTHENTICATED naming the reason (never the secret); a user signing
/// correctly whom no policy allows is answered FORBIDDEN naming the user, action and topic; and
/// nothing of theirs is stored.
#[test]
fn a_broker_with_users_takes_only_requests_signed_by_one_that_may() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "rmq-auth", "--queues", &QUEUES.to_string()]);
    let rt = wasmq_tests::runtime();
    let admin = broker.admin();
    let (root_password, password) = ("root-password-1", "user-password-1");
    let mut secrets = HashMap::new();
    rt.block_on(async {
        admin.create_user("root", root_password, &["admin"]).await.unwrap();
        for user in ["app", "ops", "nosy"] {
            admin.create_user(user, password, &[]).await.unwrap();
            secrets.insert(user, admin.new_access_key(user).await.unwrap().secret_key);
        }
        for user in ["app", "ops"] {
            let p = wasmq_client::admin_types::PolicyView {
                subject: format!("user:{user}"),
                resource: "topic:rmq-*".into(),
                actions: vec!["produce".into()],
                effect: "allow".into(),
            };
            admin.add_policy(&p).await.unwrap();
        }
    });
    let try_with = |ak: &str, sk: &str| {
        let lines = scenario(&broker.grpc_listen, &broker.ca, "auth", &["rmq-auth", ak, sk]);
        lines.into_iter().next().expect("the scenario's answer")
    };
    assert_eq!(try_with("app", &secrets["app"])["ok"], true);
    assert_eq!(try_with("ops", &secrets["ops"])["ok"], true);
    for (ak, sk, why) in [
        ("app", "guess", "wrong signature for access key \"app\""),
        ("nobody", "x", "unknown access key"),
        ("-", "-", "carries no access key"),
    ] {
        let r = try_with(ak, sk);
        assert_eq!(r["ok"], false, "{ak}/{sk}: {r}");
        let error = str_of(&r, "error");
        assert_eq!(str_of(&r, "code"), "UNAUTHENTICATED", "{ak}/{sk}: {r}");
        assert!(error.contains(why), "{ak}/{sk}: {error}");
        assert!(!error.contains("secret") && !error.contains(&secrets["app"]), "no secret in the answer: {error}");
    }
    let nosy = try_with("nosy", &secrets["nosy"]);
    assert_eq!((nosy["ok"].as_bool(), nosy["status"].as_i64()), (Some(false), Some(40300)), "FORBIDDEN: {nosy}");
    assert_eq!(str_of(&nosy, "error"), "not authorized: user nosy may not describe on topic rmq-auth");
    let conn = rt.block_on(wasmq_client::Connection::connect(broker.options().login("root", root_password))).unwrap();
    let mut bodies: Vec<String> = rt.block_on(drain(&conn, "rmq-auth")).iter().map(|(_, m)| body(m)).collect();
    bodies.sort();
    assert_eq!(bodies, ["signed by app", "signed by ops"]);
}

/// Two broker sets and a name server: Python clients given broker A's gRPC address alone reach
/// both sets through the routes (QueryRoute names each set's master at the gRPC address it
/// registered, QueryAssignment each set). A topic that only broker B serves is sent to and
/// received from through A as well; and each set keeps its own group state (no lag left on
/// either).
#[test]
fn python_clients_given_one_broker_reach_every_broker_set_of_a_cluster() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = Namesrv::start(dirs[0].path(), None, 3_000);
    let (cert, key, ca) = ns.tls_files();
    let (cert, key, ca) = (cert.display().to_string(), key.display().to_string(), ca.display().to_string());
    let start = |dir: &std::path::Path, name: &str| {
        let env = [
            ("WASMQ_TLS_CERT", cert.as_str()),
            ("WASMQ_TLS_KEY", key.as_str()),
            ("WASMQ_PEER_CA", ca.as_str()),
            ("WASMQ_NAMESRV", ns.listen.as_str()),
            ("WASMQ_REGISTER_INTERVAL_MS", "300"),
            ("WASMQ_BROKER_NAME", name),
        ];
        Broker::start(dir, &env)
    };
    let (a, b) = (start(dirs[1].path(), "broker-a"), start(dirs[2].path(), "broker-b"));
    for broker in [&a, &b] {
        broker.cli(&["topic", "create", "rmq-spread", "--queues", &QUEUES.to_string()]);
    }
    b.cli(&["topic", "create", "rmq-only-b", "--queues", &QUEUES.to_string()]);
    let rt = wasmq_tests::runtime();
    let cluster = wasmq_client::Cluster::new(vec![ns.listen.clone()], &a.ca);
    rt.block_on(async {
        let started = Instant::now();
        loop {
            cluster.forget_route("rmq-spread");
            cluster.forget_route("rmq-only-b");
            let spread = cluster.route("rmq-spread").await.is_ok_and(|r| r.len() == 2);
            if spread && cluster.route("rmq-only-b").await.is_ok() {
                let grpc = cluster.route("rmq-spread").await.unwrap().iter().map(|s| s.master_endpoints.clone()).collect::<Vec<_>>();
                let want = [&a, &b].map(|x| vec![wasmq_protocol::Endpoint { protocol: "grpc".into(), addr: x.grpc_listen.clone() }]);
                assert_eq!(grpc, want, "each set's master registers its gRPC address");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "routes incomplete: {:?}", cluster.route("rmq-spread").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    const N: usize = 40;
    let lines = scenario(&a.grpc_listen, &a.ca, "cluster", &["rmq-spread", &N.to_string(), "rmq-cluster"]);
    let of = |step: &str| -> Vec<&Value> { lines.iter().filter(|l| l["step"] == step).collect() };
    let sent_to: HashMap<String, String> =
        of("sent").iter().map(|l| (str_of(l, "body").to_owned(), str_of(l, "broker").to_owned())).collect();
    assert_eq!(sent_to.len(), N, "{lines:?}");
    let (conn_a, conn_b) = rt.block_on(async { (a.connect().await, b.connect().await) });
    let stored_at =
        |conn: &Connection, topic: &str| -> Vec<String> { rt.block_on(drain(conn, topic)).iter().map(|(_, m)| body(m)).collect() };
    let (on_a, on_b) = (stored_at(&conn_a, "rmq-spread"), stored_at(&conn_b, "rmq-spread"));
    assert!(!on_a.is_empty() && !on_b.is_empty(), "sends spread over both sets: {} on A, {} on B", on_a.len(), on_b.len());
    assert_eq!(on_a.len() + on_b.len(), N, "each message stored once");
    for (stored, name) in [(&on_a, "broker-a"), (&on_b, "broker-b")] {
        assert!(stored.iter().all(|m| sent_to[m] == name), "{name} holds only what the receipts put there: {stored:?} {sent_to:?}");
    }
    let all: std::collections::BTreeSet<String> = (0..N).map(|i| format!("c-{i}")).collect();
    for step in ["received", "pushed"] {
        let got: std::collections::BTreeSet<String> = of(step).iter().map(|l| str_of(l, "body").to_owned()).collect();
        assert_eq!(got, all, "{step}: every message, from both sets");
    }
    for group in ["rmq-cluster", "rmq-cluster-push"] {
        wait_no_lag(&a, group, "rmq-spread");
        wait_no_lag(&b, group, "rmq-spread");
    }

    // A topic broker A does not serve: through A, it is sent to and read from B.
    const M: usize = 10;
    let lines = scenario(&a.grpc_listen, &a.ca, "cluster", &["rmq-only-b", &M.to_string(), "rmq-only"]);
    let sent: Vec<&Value> = lines.iter().filter(|l| l["step"] == "sent").collect();
    assert!(sent.len() == M && sent.iter().all(|l| l["broker"] == "broker-b"), "{lines:?}");
    assert_eq!(stored_at(&conn_b, "rmq-only-b").len(), M);
    for step in ["received", "pushed"] {
        let got: std::collections::BTreeSet<&str> = lines.iter().filter(|l| l["step"] == step).map(|l| str_of(l, "body")).collect();
        assert_eq!(got.len(), M, "{step}: {lines:?}");
    }
    assert!(a.cli(&["topic", "list"]).lines().all(|l| !l.contains("rmq-only-b")), "nothing created on A");
}

/// A name server that takes connections and never answers (a host that went silent): routes do
/// not wait for it past `ROUTE_LOOKUP_TIMEOUT`, so a Python client (which gives QueryRoute 3 s)
/// sends and receives through the broker alone.
#[test]
fn a_silent_name_server_does_not_hold_up_grpc_routes() {
    // Bound and listening: the kernel completes TCP handshakes, nobody reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = silent.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_NAMESRV", silent_at.as_str()), ("WASMQ_REGISTER_INTERVAL_MS", "300")]);
    broker.cli(&["topic", "create", "rmq-alone", "--queues", &QUEUES.to_string()]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "cluster", &["rmq-alone", "5", "rmq-alone"]);
    for step in ["sent", "received", "pushed"] {
        let got: std::collections::BTreeSet<&str> = lines.iter().filter(|l| l["step"] == step).map(|l| str_of(l, "body")).collect();
        assert_eq!(got.len(), 5, "{step}: {lines:?}");
    }
    drop(silent);
}
