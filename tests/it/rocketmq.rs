//! RocketMQ 5 compatibility: the official Python client (PyPI `rocketmq-python-client`, unchanged)
//! against the real broker's gRPC port over TLS, each outcome checked through wasmq's own
//! client — an independent reader of the same queues.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmq_client::{Connection, PulledMessage, queue_for_key};
use wasmq_tests::broker::Broker;
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
    let receipts = scenario(&broker.grpc_listen, &broker.ca, "send", "rmq-orders");
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
}

/// Transactions from the Python producer: a commit is delivered, a rollback is not, and the two
/// it leaves open are settled by its checker when the broker asks over the Telemetry stream
/// (commit delivered, rollback not).
#[test]
fn a_python_producers_transactions_commit_roll_back_and_answer_check_backs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", "500")]);
    broker.cli(&["topic", "create", "rmq-tx", "--queues", &QUEUES.to_string()]);
    let lines = scenario(&broker.grpc_listen, &broker.ca, "transaction", "rmq-tx");
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
    let lines = scenario(&broker.grpc_listen, &broker.ca, "simple", "rmq-simple");
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
    let rt = wasmq_tests::runtime();
    let started = Instant::now();
    loop {
        let group = rt.block_on(broker.admin().describe_group("rmq-simple")).unwrap();
        let lag: u64 = group.queues.iter().filter(|q| q.topic == "rmq-simple").map(|q| q.lag).sum();
        let committed = group.queues.iter().filter(|q| q.topic == "rmq-simple").count();
        if lag == 0 && committed as u32 == QUEUES {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the group still lags: {group:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
