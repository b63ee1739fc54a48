//! Consumer groups through the real broker over TLS: clustering shares queues and takes over
//! from a member that dies without leaving, offsets survive a broker restart, broadcasting
//! gives every member everything, tag filters skip what does not match but still move the
//! group's offset. Guards against lost messages on rebalance, reordering within a queue, a stale
//! member committing over a new owner, and lag that never reaches zero under a filter.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_client::{ConsumeResult, GroupConsumer, GroupMode, GroupOptions, OutgoingMessage, Producer, PullConsumer, PulledMessage};
use wasmq_tests::broker::Broker;
use wasmq_tests::runtime;

/// (member, topic, queue, queue offset, unique id)
type Seen = Arc<Mutex<Vec<(usize, String, u32, u64, String)>>>;

fn recorder(seen: &Seen, member: usize) -> wasmq_client::Handler {
    let seen = Arc::clone(seen);
    Arc::new(move |topic: &str, queue: u32, m: &PulledMessage| {
        seen.lock().unwrap().push((member, topic.to_owned(), queue, m.queue_offset, m.message.unique_id.clone()));
        ConsumeResult::Success
    })
}

fn options(group: &str, topic: &str) -> GroupOptions {
    let mut o = GroupOptions::new(group, topic);
    o.heartbeat_interval = Duration::from_millis(300);
    o.pull_wait = Duration::from_millis(500);
    o.batch = 256;
    o
}

async fn produce(broker: &Broker, topic: &str, n: usize, tag: Option<&str>) -> Vec<String> {
    let producer = Producer::new(broker.connect().await, "p");
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let msgs = (0..100.min(n - chunk * 100))
            .map(|i| {
                let m = OutgoingMessage::new(format!("{chunk}-{i}").into_bytes());
                match tag {
                    Some(t) => m.with_tags(t),
                    None => m,
                }
            })
            .collect();
        ids.extend(producer.send_batch(topic, msgs).await.unwrap().into_iter().map(|r| r.message_id));
    }
    ids
}

async fn wait_for(seen: &Seen, want: &HashSet<String>, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got: HashSet<String> = seen.lock().unwrap().iter().map(|s| s.4.clone()).collect();
        if want.is_subset(&got) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {} of {} handled after {limit:?}",
            want.iter().filter(|w| got.contains(*w)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A member in its own process, killed with SIGKILL by the test.
struct ChildMember {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A message the child member handled.
struct Handled {
    queue: u32,
    offset: u64,
    id: String,
    /// When, in ns since the Unix epoch (comparable with [`unix_ns`] in this process).
    at_ns: u128,
    body: String,
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// How long a killed member's queues may take to move: it is dropped from the group one session
/// timeout after its last heartbeat (one heartbeat interval before the kill at most), the
/// others see the new assignment at their next heartbeat and pull at once; the margin covers
/// the rest (handling the moved queues' backlog, a busy machine).
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(300);
const TAKEOVER_MARGIN: Duration = Duration::from_secs(1);

impl ChildMember {
    fn start(broker: &Broker, group: &str, topic: &str, orderly: bool) -> Self {
        let mut args = vec![broker.listen.as_str(), broker.ca.to_str().unwrap(), group, topic];
        if orderly {
            args.push("orderly");
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_group-consumer-child"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start consumer child");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        assert_eq!(lines.recv_timeout(Duration::from_secs(30)).unwrap(), "JOINED");
        Self { child, lines, reader: Some(reader) }
    }

    /// What the child printed since the last call.
    fn handled(&self) -> Vec<Handled> {
        self.lines
            .try_iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(6, ' ').collect();
                match f[..] {
                    ["MSG", q, off, id, at, body] => Some(Handled {
                        queue: q.parse().unwrap(),
                        offset: off.parse().unwrap(),
                        id: id.to_owned(),
                        at_ns: at.parse().unwrap(),
                        body: body.to_owned(),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// Moves what the child printed into `seen` as `member`; returns how many of those were
    /// bodies starting with `prefix`.
    fn drain(&self, seen: &Seen, member: usize, prefix: &str) -> usize {
        let handled = self.handled();
        let n = handled.iter().filter(|h| h.body.starts_with(prefix)).count();
        seen.lock().unwrap().extend(handled.into_iter().map(|h| (member, "work".to_owned(), h.queue, h.offset, h.id)));
        n
    }

    /// SIGKILL; returns once everything the child printed can be read.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.take().expect("killed once").join().unwrap();
    }
}

/// 100k messages through a 3-member group (two in this process, one in a child): every
/// message handled, per-queue order kept; the child is killed with SIGKILL and its queues move
/// within the session timeout; offsets survive a broker restart.
#[test]
fn clustering_shares_queues_and_takes_over_from_a_killed_member() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WASMQ_GROUP_SESSION_TIMEOUT_MS", "2000")];
    let broker = Broker::start(dir.path(), &env);
    let rt = runtime();
    let committed_total = rt.block_on(async {
        broker.admin().create_topic("work", 8).await.unwrap();
        let first: HashSet<String> = produce(&broker, "work", 92_000, None).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let mut members = Vec::new();
        for m in 0..2 {
            members.push(GroupConsumer::start(broker.connect().await, options("workers", "work"), recorder(&seen, m)).await.unwrap());
        }
        let mut child = ChildMember::start(&broker, "workers", "work", false);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            child.drain(&seen, 2, "");
            let got: HashSet<String> = seen.lock().unwrap().iter().map(|s| s.4.clone()).collect();
            if first.is_subset(&got) {
                break;
            }
            assert!(Instant::now() < deadline, "{} of {} handled", first.iter().filter(|w| got.contains(*w)).count(), first.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        {
            let s = seen.lock().unwrap();
            let members_used: HashSet<usize> = s.iter().map(|x| x.0).collect();
            assert_eq!(members_used.len(), 3, "the work was shared");
            // Per queue, messages are handled for the first time in offset order (re-deliveries
            // after a queue moves are duplicates, counted below, not reordering).
            let mut first_seen: HashSet<(u32, u64)> = HashSet::new();
            let mut last: HashMap<u32, u64> = HashMap::new();
            for (_, _, q, off, _) in s.iter() {
                if first_seen.insert((*q, *off))
                    && let Some(prev) = last.insert(*q, *off)
                {
                    assert!(*off > prev, "queue {q}: offset {off} handled first after {prev}");
                }
            }
            eprintln!("92000 messages, {} deliveries, {} duplicates", s.len(), s.len() - 92_000);
        }

        // SIGKILL the child member mid-stream: 8,000 more messages are sent over ~1.6 s, and the
        // child dies once it has handled some of them. Every one is handled once its queues
        // move, within the session timeout and the heartbeats that notice it.
        let producer = Producer::new(broker.connect().await, "p");
        let stream = tokio::spawn(async move {
            let mut ids = Vec::new();
            for chunk in 0..80 {
                let msgs = (0..100).map(|i| OutgoingMessage::new(format!("more-{chunk}-{i}").into_bytes())).collect();
                ids.extend(producer.send_batch("work", msgs).await.unwrap().into_iter().map(|r| r.message_id));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.drain(&seen, 2, "more-") == 0 {
            assert!(Instant::now() < deadline, "the child handled none of the new messages");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!stream.is_finished(), "the kill is mid-stream: the producer is still sending");
        child.kill();
        child.drain(&seen, 2, "");
        let killed_at = Instant::now();
        let more: HashSet<String> = stream.await.unwrap().into_iter().collect();
        let bound = SESSION_TIMEOUT + 2 * HEARTBEAT + TAKEOVER_MARGIN;
        wait_for(&seen, &more, bound.saturating_sub(killed_at.elapsed())).await;
        let took = killed_at.elapsed();
        eprintln!("after SIGKILL of a member mid-stream, all 8000 new messages were handled {took:?} later (session timeout 2 s)");
        for m in members {
            m.shutdown().await;
        }
        let admin = broker.admin();
        let group = admin.describe_group("workers").await.unwrap();
        assert_eq!(group.queues.iter().map(|q| q.lag).sum::<u64>(), 0, "the admin API shows no lag: {group:?}");
        assert!(group.members.is_empty(), "members that shut down left, the killed one expired");
        let detail = admin.describe_topic("work").await.unwrap();
        detail.queues.iter().map(|q| q.max_offset).sum::<u64>()
    });
    assert_eq!(committed_total, 100_000);
    assert!(broker.stop().success());

    // Offsets survive a restart: every queue's committed offset is at its end.
    let broker = Broker::restart_from(dir.path(), &env);
    rt.block_on(async {
        let group = broker.admin().describe_group("workers").await.unwrap();
        let committed: u64 = group.queues.iter().filter(|q| q.topic == "work").map(|q| q.committed.expect("committed")).sum();
        assert_eq!(committed, 100_000, "committed offsets cover every message after a restart");
    });
}

#[test]
fn broadcasting_and_tag_filters() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    runtime().block_on(async {
        let admin = broker.admin();
        admin.create_topic("news", 4).await.unwrap();
        let ids: HashSet<String> = produce(&broker, "news", 2_000, None).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let mut members = Vec::new();
        for m in 0..3 {
            let mut o = options("readers", "news");
            o.mode = GroupMode::Broadcasting;
            members.push(GroupConsumer::start(broker.connect().await, o, recorder(&seen, m)).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let per_member: Vec<usize> = (0..3)
                .map(|m| {
                    seen.lock().unwrap().iter().filter(|s| s.0 == m).map(|s| s.4.clone()).collect::<HashSet<_>>().intersection(&ids).count()
                })
                .collect();
            if per_member.iter().all(|&n| n == 2_000) {
                break;
            }
            assert!(Instant::now() < deadline, "broadcast incomplete: {per_member:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for m in members {
            m.shutdown().await;
        }

        admin.create_topic("tagged", 2).await.unwrap();
        let a: HashSet<String> = produce(&broker, "tagged", 300, Some("A")).await.into_iter().collect();
        let c: HashSet<String> = produce(&broker, "tagged", 300, Some("C")).await.into_iter().collect();
        let b: HashSet<String> = produce(&broker, "tagged", 300, Some("B")).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let mut o = options("ab-only", "tagged");
        o.subscriptions = vec![("tagged".into(), "A || B".into())];
        let member = GroupConsumer::start(broker.connect().await, o, recorder(&seen, 0)).await.unwrap();
        let want: HashSet<String> = a.union(&b).cloned().collect();
        wait_for(&seen, &want, Duration::from_secs(30)).await;
        // Lag reaches zero: the committed offsets reach the queues' ends despite skipped C's.
        let conn = broker.connect().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut lag = 0;
            for q in 0..2 {
                let wasmq_protocol::Response::OffsetQuery(o) = conn
                    .call(&wasmq_protocol::Request::OffsetQuery(wasmq_protocol::OffsetQueryRequest {
                        group: "ab-only".into(),
                        topic: "tagged".into(),
                        queue_id: q,
                    }))
                    .await
                    .unwrap()
                else {
                    panic!()
                };
                let max = admin.describe_topic("tagged").await.unwrap().queues[q as usize].max_offset;
                lag += max - o.offset.unwrap_or(0);
            }
            if lag == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "lag stuck at {lag}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        member.shutdown().await;
        let got: HashSet<String> = seen.lock().unwrap().iter().map(|s| s.4.clone()).collect();
        assert!(got.is_disjoint(&c), "a message tagged C reached an `A || B` subscription");

        // A new group can start from a point in time.
        admin.create_topic("timeline", 2).await.unwrap();
        let before: HashSet<String> = produce(&broker, "timeline", 200, None).await.into_iter().collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after: HashSet<String> = produce(&broker, "timeline", 200, None).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let mut o = options("late-joiners", "timeline");
        o.start_from = wasmq_client::StartFrom::Timestamp(since);
        let member = GroupConsumer::start(broker.connect().await, o, recorder(&seen, 0)).await.unwrap();
        wait_for(&seen, &after, Duration::from_secs(20)).await;
        member.shutdown().await;
        let got: HashSet<String> = seen.lock().unwrap().iter().map(|s| s.4.clone()).collect();
        assert!(got.is_disjoint(&before), "messages stored before the start time were delivered");
    });
}

/// (body, topic shown to the handler, reconsume times, when)
type Attempts = Arc<Mutex<Vec<(String, String, u32, Instant)>>>;

/// A handler failing twice then succeeding sees the message three times, each retry no earlier
/// than its delay; one that always fails sees it 1 + max times, then it is in the DLQ.
#[test]
fn failed_messages_come_back_after_their_delays_then_go_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_RETRY_DELAYS_MS", "500,1000")]);
    runtime().block_on(async {
        broker.admin().create_topic("jobs", 2).await.unwrap();
        let attempts: Attempts = Arc::default();
        let log = Arc::clone(&attempts);
        let handler: wasmq_client::Handler = Arc::new(move |topic: &str, _q: u32, m: &PulledMessage| {
            let body = String::from_utf8_lossy(&m.message.body).into_owned();
            log.lock().unwrap().push((body.clone(), topic.to_owned(), m.reconsume_times, Instant::now()));
            match body.as_str() {
                "flaky" if m.reconsume_times < 2 => ConsumeResult::ReconsumeLater,
                "poison" => ConsumeResult::ReconsumeLater,
                _ => ConsumeResult::Success,
            }
        });
        let mut o = options("workers", "jobs");
        o.handler_concurrency = 4;
        o.max_reconsume_times = 3; // the group's own maximum (the broker's default is 16)
        let member = GroupConsumer::start(broker.connect().await, o, handler).await.unwrap();
        let producer = Producer::new(broker.connect().await, "p");
        for body in ["flaky", "poison", "fine"] {
            producer.send("jobs", OutgoingMessage::new(body.as_bytes().to_vec())).await.unwrap();
        }
        let consumer = PullConsumer::new(broker.connect().await);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let flaky = attempts.lock().unwrap().iter().filter(|a| a.0 == "flaky").count();
            let dlq = consumer.pull("%DLQ%workers", 0, 0, 10, Duration::ZERO).await.map(|p| p.messages).unwrap_or_default();
            if flaky == 3 && dlq.len() == 1 {
                assert_eq!(&dlq[0].message.body[..], b"poison");
                assert_eq!(dlq[0].reconsume_times, 4);
                break;
            }
            assert!(Instant::now() < deadline, "flaky seen {flaky} times, DLQ holds {}", dlq.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        member.shutdown().await;
        {
            let a = attempts.lock().unwrap();
            let flaky: Vec<_> = a.iter().filter(|x| x.0 == "flaky").collect();
            assert_eq!(flaky.iter().map(|x| x.2).collect::<Vec<_>>(), vec![0, 1, 2], "reconsume counts");
            assert!(flaky.iter().all(|x| x.1 == "jobs"), "a retried message shows its original topic");
            let gaps: Vec<Duration> = flaky.windows(2).map(|w| w[1].3 - w[0].3).collect();
            eprintln!("retry gaps {gaps:?} for delays 500 ms, 1000 ms");
            // The broker schedules a retry at its millisecond clock (truncated) + the delay, so a
            // gap seen by the client may come up to 1 ms short of the delay without being early.
            assert!(gaps[0] >= Duration::from_millis(499) && gaps[1] >= Duration::from_millis(999), "never early: {gaps:?}");
            assert!(gaps[0] < Duration::from_millis(2500) && gaps[1] < Duration::from_millis(3000), "not much late: {gaps:?}");
            assert_eq!(a.iter().filter(|x| x.0 == "poison").count(), 4, "1 delivery + 3 reconsumes, then the DLQ");
            assert_eq!(a.iter().filter(|x| x.0 == "fine").count(), 1);
        }

        // The DLQ can be inspected and a dead letter sent back to its topic.
        let admin = broker.admin();
        let dead = admin.dead_letters("workers").await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].origin_topic.as_str(), dead[0].body_preview.as_str(), dead[0].reconsume_times), ("jobs", "poison", 4));
        let resent = admin.resend_dead_letter("workers", dead[0].queue_offset).await.unwrap();
        assert_eq!(resent.topic, "jobs");
        let p = consumer.pull("jobs", resent.queue_id, resent.queue_offset, 1, Duration::ZERO).await.unwrap();
        assert_eq!((&p.messages[0].message.body[..], p.messages[0].reconsume_times), (&b"poison"[..], 0));
        assert!(admin.resend_dead_letter("workers", 99).await.is_err(), "no dead letter there");
    });
}

/// When (ns since the Unix epoch), by which member, key and sequence number.
type Processing = (u128, usize, u32, u32);

/// Orderly: 4 members, 10k messages over 100 keys, one (in its own process) killed with SIGKILL
/// midway: every key's messages are processed for the first time in send order, the killed
/// member's processings included (ordered by when they happened).
#[test]
fn orderly_consumption_keeps_each_keys_order_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_ORDER_LOCK_TTL_MS", "2000"), ("WASMQ_GROUP_SESSION_TIMEOUT_MS", "2000")]);
    runtime().block_on(async {
        broker.admin().create_topic("orders", 8).await.unwrap();
        let producer = Producer::new(broker.connect().await, "p");
        for round in 0..10 {
            for k in 0..100 {
                let msgs = (0..10)
                    .map(|i| OutgoingMessage::new(format!("{k}:{}", round * 10 + i).into_bytes()).with_ordering_key(format!("key-{k}")))
                    .collect();
                producer.send_batch("orders", msgs).await.unwrap();
            }
        }
        // (when in ns, member, key, seq) of every processing.
        let processed: Arc<Mutex<Vec<Processing>>> = Arc::default();
        let key_seq = |body: &str| -> (u32, u32) {
            let (k, seq) = body.split_once(':').unwrap();
            (k.parse().unwrap(), seq.parse().unwrap())
        };
        let mut child = ChildMember::start(&broker, "ordered", "orders", true);
        let drain_child = |child: &ChildMember| {
            let mut p = processed.lock().unwrap();
            for h in child.handled() {
                let (k, seq) = key_seq(&h.body);
                p.push((h.at_ns, 3, k, seq));
            }
        };
        let mut members = Vec::new();
        for id in 0..3 {
            let log = Arc::clone(&processed);
            let handler: wasmq_client::Handler = Arc::new(move |_t: &str, _q: u32, m: &PulledMessage| {
                let text = String::from_utf8_lossy(&m.message.body).into_owned();
                let (k, seq) = key_seq(&text);
                log.lock().unwrap().push((unix_ns(), id, k, seq));
                ConsumeResult::Success
            });
            let mut o = options("ordered", "orders");
            o.orderly = true;
            o.batch = 32;
            members.push(GroupConsumer::start(broker.connect().await, o, handler).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            drain_child(&child);
            let enough = {
                let p = processed.lock().unwrap();
                p.len() >= 3_000 && p.iter().any(|x| x.1 == 3)
            };
            if enough {
                break;
            }
            assert!(Instant::now() < deadline, "3000 processings, some by the child, within 90 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SIGKILL mid-stream: no leave, no unlock; its locks expire.
        child.kill();
        drain_child(&child);
        loop {
            let done: HashSet<(u32, u32)> = processed.lock().unwrap().iter().map(|p| (p.2, p.3)).collect();
            if done.len() == 10_000 {
                break;
            }
            assert!(Instant::now() < deadline, "{} of 10000 processed", done.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for m in members {
            m.shutdown().await;
        }
        let mut p = processed.lock().unwrap();
        p.sort_unstable();
        let by_child = p.iter().filter(|x| x.1 == 3).count();
        assert!(by_child > 0, "the killed member processed some messages");
        let mut first: HashSet<(u32, u32)> = HashSet::new();
        let mut last: HashMap<u32, u32> = HashMap::new();
        for (_, _, k, seq) in p.iter() {
            if first.insert((*k, *seq))
                && let Some(prev) = last.insert(*k, *seq)
            {
                assert!(*seq > prev, "key {k}: message {seq} processed before {prev}'s successor order");
            }
        }
        eprintln!("orderly: 10000 messages, {} processings ({} duplicates), {by_child} by the member killed", p.len(), p.len() - 10_000);
    });
}

/// How often the broker saves consumer offsets (docs/protocol.md: "persisted every 5 s").
const OFFSETS_SAVED_EVERY: Duration = Duration::from_secs(5);

/// Offsets a group committed at least one save interval before a broker SIGKILL survive it:
/// after the restart the group resumes there, and nothing it handled before comes again.
#[test]
fn committed_offsets_survive_a_broker_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WASMQ_GROUP_SESSION_TIMEOUT_MS", "2000")];
    let broker = Broker::start(dir.path(), &env);
    let rt = runtime();
    let first: HashSet<String> = rt.block_on(async {
        broker.admin().create_topic("kept", 2).await.unwrap();
        let first: HashSet<String> = produce(&broker, "kept", 1_000, None).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let member = GroupConsumer::start(broker.connect().await, options("keepers", "kept"), recorder(&seen, 0)).await.unwrap();
        wait_for(&seen, &first, Duration::from_secs(30)).await;
        member.shutdown().await;
        let group = broker.admin().describe_group("keepers").await.unwrap();
        assert_eq!(group.queues.iter().map(|q| q.committed.unwrap_or(0)).sum::<u64>(), 1_000, "{group:?}");
        first
    });
    std::thread::sleep(OFFSETS_SAVED_EVERY + Duration::from_secs(1));
    broker.kill();
    let broker = Broker::restart_from(dir.path(), &env);
    rt.block_on(async {
        let group = broker.admin().describe_group("keepers").await.unwrap();
        assert_eq!(group.queues.iter().map(|q| q.committed.unwrap_or(0)).sum::<u64>(), 1_000, "after the SIGKILL: {group:?}");
        let more: HashSet<String> = produce(&broker, "kept", 10, None).await.into_iter().collect();
        let seen: Seen = Arc::default();
        let member = GroupConsumer::start(broker.connect().await, options("keepers", "kept"), recorder(&seen, 0)).await.unwrap();
        wait_for(&seen, &more, Duration::from_secs(30)).await;
        // A pull round more, in case anything older were still to come.
        tokio::time::sleep(Duration::from_secs(1)).await;
        member.shutdown().await;
        let again: Vec<String> = seen.lock().unwrap().iter().map(|s| s.4.clone()).filter(|id| first.contains(id)).collect();
        assert!(again.is_empty(), "{} messages handled before the SIGKILL came again", again.len());
        assert_eq!(seen.lock().unwrap().len(), 10, "exactly the 10 new messages");
    });
}

/// `wasmq consume --group G --count N` prints N messages and commits exactly those: the next
/// run goes on from the first one it did not print.
#[test]
fn the_cli_group_consumer_commits_exactly_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[]);
    broker.cli(&["topic", "create", "six", "--queues", "1"]);
    for i in 0..6 {
        broker.cli(&["send", "six", &format!("m{i}")]);
    }
    let offsets = |out: &str| -> Vec<u64> { out.lines().map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()).collect() };
    let first = broker.cli(&["consume", "six", "--group", "g", "--count", "2"]);
    assert_eq!(offsets(&first), vec![0, 1], "{first}");
    let rt = runtime();
    let committed = rt.block_on(async { broker.admin().describe_group("g").await.unwrap().queues[0].committed });
    assert_eq!(committed, Some(2), "only what was printed is committed");
    let rest = broker.cli(&["consume", "six", "--group", "g", "--count", "4"]);
    assert_eq!(offsets(&rest), vec![2, 3, 4, 5], "{rest}");
}
