//! Transactional messages (half messages, commit / rollback, check-back to the producer group)
//! and scheduled messages, through the real broker over TLS.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use wasmq_client::{
    Connection, OutgoingMessage, Producer, PullConsumer, PulledMessage, TransactionCheck, TransactionProducer, TxDecision, TxState,
};
use wasmq_tests::broker::Broker;

const CHECK_INTERVAL: &str = "1000";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn body(m: &PulledMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

/// Every message of every queue of `topic`, from the start.
async fn drain(conn: &Connection, topic: &str, queues: u32) -> Vec<PulledMessage> {
    wasmq_tests::drain(conn, topic, queues).await.into_iter().map(|(_, m)| m).collect()
}

/// Waits until the broker holds no undecided transaction.
async fn wait_no_pending(broker: &Broker, limit: Duration) {
    let started = Instant::now();
    loop {
        let t = broker.admin().transactions().await.unwrap();
        let pending: u64 = t.pending.iter().map(|p| p.pending).sum();
        if pending == 0 {
            return;
        }
        assert!(started.elapsed() < limit, "{pending} transactions still undecided after {limit:?}: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker that checks undecided transactions after 1 s, with `topic` created.
fn broker_with_topic(dir: &std::path::Path, topic: &str, queues: &str) -> Broker {
    let broker = Broker::start(dir, &[("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", CHECK_INTERVAL)]);
    broker.cli(&["topic", "create", topic, "--queues", queues]);
    broker
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How a test transaction is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Commit,
    Rollback,
    /// The local transaction says unknown; the check-back commits.
    UnknownThenCommit,
    /// Unknown locally and at the first check; the second check commits.
    UnknownTwiceThenCommit,
    /// Unknown locally; the check-back rolls back.
    UnknownThenRollback,
}

impl Plan {
    fn commits(self) -> bool {
        matches!(self, Plan::Commit | Plan::UnknownThenCommit | Plan::UnknownTwiceThenCommit)
    }
}

#[test]
fn ten_thousand_transactions_consumers_see_exactly_the_committed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path(), "orders", "4");
    wasmq_tests::runtime().block_on(async {
        const N: usize = 10_000;
        const TASKS: usize = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let plans: Arc<Vec<Plan>> = Arc::new(
            (0..N)
                .map(|_| match rng.random_range(0..10) {
                    0..=3 => Plan::Commit,
                    4..=6 => Plan::Rollback,
                    7 => Plan::UnknownThenCommit,
                    8 => Plan::UnknownTwiceThenCommit,
                    _ => Plan::UnknownThenRollback,
                })
                .collect(),
        );
        let index = |m: &wasmq_client::Message| -> usize { String::from_utf8_lossy(&m.body).trim_start_matches("tx-").parse().unwrap() };
        let checked: Arc<Mutex<HashSet<usize>>> = Arc::default();
        // How long after it was due (born + check interval) each first check came.
        let check_lateness: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (p2, c2, l2) = (Arc::clone(&plans), Arc::clone(&checked), Arc::clone(&check_lateness));
        let checker = move |c: &TransactionCheck| {
            let i = index(&c.message);
            c2.lock().unwrap().insert(i);
            if c.checks == 0 {
                l2.lock().unwrap().push(now_ms().saturating_sub(c.message.born_ms + 1_000));
            }
            match p2[i] {
                Plan::UnknownTwiceThenCommit if c.checks == 0 => TxDecision::Unknown,
                p if p.commits() => TxDecision::Commit,
                _ => TxDecision::Rollback,
            }
        };
        let producer = Arc::new(TransactionProducer::start(broker.connect().await, "order-service", checker).await.unwrap());

        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (producer, plans) = (Arc::clone(&producer), Arc::clone(&plans));
            tasks.push(tokio::spawn(async move {
                for i in (t..N).step_by(TASKS) {
                    let local = match plans[i] {
                        Plan::Commit => TxDecision::Commit,
                        Plan::Rollback => TxDecision::Rollback,
                        _ => TxDecision::Unknown,
                    };
                    let tx = producer.send("orders", OutgoingMessage::new(format!("tx-{i}").into_bytes()), |_| local).await.unwrap();
                    let ended = tx.ended.unwrap();
                    // (A check-back may, under load, have ended it first with the same answer.)
                    match local {
                        TxDecision::Commit => assert_eq!(ended.state, TxState::Committed, "transaction {i}"),
                        TxDecision::Rollback => assert_eq!(ended.state, TxState::RolledBack, "transaction {i}"),
                        TxDecision::Unknown => assert!(!ended.applied, "transaction {i}: {ended:?}"),
                    }
                }
            }));
        }
        // Midway and at the end of sending: consumers see only what has been committed.
        let conn = broker.connect().await;
        let mut midway_checked = false;
        while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let visible = drain(&conn, "orders", 4).await;
            let checked_now = checked.lock().unwrap().clone();
            for m in &visible {
                let i = index(&m.message);
                assert!(plans[i].commits(), "transaction {i} ({:?}) visible", plans[i]);
                assert!(plans[i] == Plan::Commit || checked_now.contains(&i), "transaction {i} visible before its check-back");
            }
            midway_checked = true;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let tx_secs = started.elapsed().as_secs_f64();
        assert!(midway_checked);

        wait_no_pending(&broker, Duration::from_secs(60)).await;
        let visible = drain(&conn, "orders", 4).await;
        let mut seen = HashSet::new();
        for m in &visible {
            assert!(seen.insert(index(&m.message)), "transaction {} delivered twice", body(m));
        }
        let want: HashSet<usize> = (0..N).filter(|&i| plans[i].commits()).collect();
        assert_eq!(seen, want, "consumers see exactly the committed transactions");
        let stats = broker.admin().transactions().await.unwrap();
        assert_eq!(stats.committed, want.len() as u64);
        assert_eq!(stats.rolled_back, (N - want.len()) as u64);
        assert_eq!(stats.discarded, 0);
        let unknown_twice = plans.iter().filter(|p| **p == Plan::UnknownTwiceThenCommit).count() as u64;
        assert!(stats.unknown_answers >= unknown_twice, "{stats:?}");
        let mut late = check_lateness.lock().unwrap().clone();
        late.sort_unstable();
        println!(
            "check-back: {} first checks, called {} ms (p50) / {} ms (p99) after due (check interval {CHECK_INTERVAL} ms)",
            late.len(),
            percentile(&late, 0.5),
            percentile(&late, 0.99)
        );

        // The same load as plain sends, for the ratio.
        let plain = Producer::new(broker.connect().await, "plain");
        broker.cli(&["topic", "create", "plain", "--queues", "4"]);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let plain = plain.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..N).step_by(TASKS) {
                    plain.send("plain", OutgoingMessage::new(format!("tx-{i}").into_bytes())).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let plain_secs = started.elapsed().as_secs_f64();
        println!(
            "10k transactions: {:.0}/s (send half + end) vs plain sends {:.0}/s (debug build, {TASKS} tasks, one connection each)",
            N as f64 / tx_secs,
            N as f64 / plain_secs
        );
    });
}

/// A transactional producer in its own process, killed with SIGKILL after sending half messages.
fn run_child(broker: &Broker, group: &str, topic: &str, n: usize) -> (std::process::Child, Vec<(u64, String, String)>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tx-producer-child"))
        .args([broker.listen.as_str(), broker.ca.to_str().unwrap(), group, topic, &n.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start producer child");
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut halves = Vec::new();
    use std::io::BufRead;
    for line in out.lines().map_while(Result::ok) {
        if line == "SENT" {
            break;
        }
        let mut f = line.split(' ').skip(1);
        let (o, id, b) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        halves.push((o.parse().unwrap(), id.to_owned(), b.to_owned()));
    }
    (child, halves)
}

#[test]
fn a_second_producer_of_the_group_answers_after_the_first_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_topic(dir.path(), "payments", "2");
    const N: usize = 200;
    let (mut child, halves) = run_child(&broker, "payment-service", "payments", N);
    assert_eq!(halves.len(), N);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = now_ms();
    wasmq_tests::runtime().block_on(async {
        let conn = broker.connect().await;
        assert!(drain(&conn, "payments", 2).await.is_empty(), "half messages are invisible");
        // With no producer of the group connected, checks wait and are not counted.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let t = broker.admin().transactions().await.unwrap();
        let p = t.pending.iter().find(|p| p.producer_group == "payment-service").expect("pending listed");
        assert_eq!((p.topic.as_str(), p.pending, p.most_checks), ("payments", N as u64, 0), "{t:?}");

        let checks: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
        let c2 = Arc::clone(&checks);
        let second = TransactionProducer::start(broker.connect().await, "payment-service", move |c: &TransactionCheck| {
            let b = String::from_utf8_lossy(&c.message.body).into_owned();
            c2.lock().unwrap().push((b.clone(), c.message.born_ms, now_ms()));
            let i: usize = b.trim_start_matches("tx-").parse().unwrap();
            if i.is_multiple_of(2) { TxDecision::Commit } else { TxDecision::Rollback }
        })
        .await
        .unwrap();
        let answered_from = now_ms();
        assert!(answered_from - killed_at > 1_000, "the checks were due before the second producer joined");
        wait_no_pending(&broker, Duration::from_secs(30)).await;
        let visible: Vec<String> = drain(&conn, "payments", 2).await.iter().map(body).collect();
        let want: HashSet<String> = (0..N).filter(|i| i % 2 == 0).map(|i| format!("tx-{i}")).collect();
        assert_eq!(visible.len(), want.len(), "each committed once");
        assert_eq!(visible.into_iter().collect::<HashSet<_>>(), want);
        let checks = checks.lock().unwrap().clone();
        assert_eq!(checks.iter().map(|c| &c.0).collect::<HashSet<_>>().len(), N, "every transaction checked");
        // Check-back latency: from the second producer connecting (every check was overdue by
        // then) to its checker being called.
        let mut lat: Vec<u64> = checks.iter().map(|c| c.2.saturating_sub(answered_from)).collect();
        lat.sort_unstable();
        println!(
            "check-back after a killed producer: {N} transactions answered {} ms (p50) / {} ms (p99) after a second producer joined ({} ms after the kill); check interval {CHECK_INTERVAL} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            answered_from - killed_at
        );
        assert!(percentile(&lat, 0.99) < 1_000, "overdue checks go to a producer as soon as it joins: {lat:?}");
        drop(second);
    });
}

#[test]
fn broker_sigkill_and_power_loss_mid_stream_lose_no_commit_and_repeat_none() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = journal_dir.path().join("io-journal");
    let env = [
        ("WASMQ_FLUSH", "sync"),
        ("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", CHECK_INTERVAL),
        (wasmq_store::JOURNAL_ENV, journal.to_str().unwrap()),
    ];
    let broker = Broker::start(dir.path(), &env);
    broker.cli(&["topic", "create", "ledger", "--queues", "4"]);
    // What each local transaction decided, by message id: the checker's source of truth.
    let decided: Arc<Mutex<HashMap<String, TxDecision>>> = Arc::default();
    let acked: Arc<Mutex<Vec<(String, TxState)>>> = Arc::default();
    let checker = |decided: Arc<Mutex<HashMap<String, TxDecision>>>| {
        move |c: &TransactionCheck| {
            // A half message whose local transaction never ran (its send was not answered) is
            // rolled back, as an application would.
            decided.lock().unwrap().get(&c.message.unique_id).copied().unwrap_or(TxDecision::Rollback)
        }
    };
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        let producer =
            Arc::new(TransactionProducer::start(broker.connect().await, "ledger-service", checker(Arc::clone(&decided))).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let (producer, decided, acked) = (Arc::clone(&producer), Arc::clone(&decided), Arc::clone(&acked));
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for i in 0..100_000u64 {
                    let commit = rng.random_bool(0.5);
                    let d = decided.clone();
                    let local = move |r: &wasmq_client::SendReceipt| {
                        let v = if commit { TxDecision::Commit } else { TxDecision::Rollback };
                        d.lock().unwrap().insert(r.message_id.clone(), v);
                        v
                    };
                    let Ok(tx) = producer.send("ledger", OutgoingMessage::new(format!("{t}-{i}").into_bytes()), local).await else {
                        return;
                    };
                    match tx.ended {
                        Ok(e) => {
                            let want = if commit { TxState::Committed } else { TxState::RolledBack };
                            assert_eq!(e.state, want, "{}", tx.receipt.message_id);
                            acked.lock().unwrap().push((tx.receipt.message_id, e.state));
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < 1_500 {
            assert!(Instant::now() < deadline, "only {} transactions ended within 60 s", acked.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("power loss: {}", broker.lose_power(&journal, wasmq_tests::power_loss::Mode::Random));
        for t in tasks {
            t.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    let broker = Broker::restart_from(dir.path(), &env);
    rt.block_on(async {
        let _second = TransactionProducer::start(broker.connect().await, "ledger-service", checker(Arc::clone(&decided))).await.unwrap();
        wait_no_pending(&broker, Duration::from_secs(60)).await;
        let visible = drain(&broker.connect().await, "ledger", 4).await;
        let decided = decided.lock().unwrap().clone();
        let mut seen = HashSet::new();
        for m in &visible {
            let id = &m.message.unique_id;
            assert!(seen.insert(id.clone()), "{id} committed twice");
            assert_eq!(decided.get(id), Some(&TxDecision::Commit), "{id} visible but not committed");
        }
        let mut commits = 0;
        for (id, state) in &acked {
            if *state == TxState::Committed {
                commits += 1;
                assert!(seen.contains(id), "acknowledged commit {id} lost");
            }
        }
        // Every half message stored with a commit decision ends up committed (by its end or by
        // the check-back after the restart).
        let committed_decisions = decided.values().filter(|d| **d == TxDecision::Commit).count();
        assert!(seen.len() >= commits && seen.len() <= committed_decisions, "{} visible, {commits} acked commits", seen.len());
        println!(
            "SIGKILL mid-stream: {} ends acknowledged ({commits} commits), {} committed after restart, {} local commits decided",
            acked.len(),
            seen.len(),
            committed_decisions
        );
    });
}

#[test]
fn late_and_repeated_ends_change_nothing_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        Broker::start(dir.path(), &[("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", CHECK_INTERVAL), ("WASMQ_TRANSACTION_CHECKS_MAX", "2")]);
    broker.cli(&["topic", "create", "t", "--queues", "1"]);
    wasmq_tests::runtime().block_on(async {
        let p = TransactionProducer::start(broker.connect().await, "g", |_| TxDecision::Unknown).await.unwrap();
        let committed = p.send("t", OutgoingMessage::new(&b"committed"[..]), |_| TxDecision::Commit).await.unwrap();
        let rolled_back = p.send("t", OutgoingMessage::new(&b"rolled back"[..]), |_| TxDecision::Rollback).await.unwrap();
        for d in [TxDecision::Commit, TxDecision::Rollback, TxDecision::Commit] {
            let e = p.end(&committed.receipt, d).await.unwrap();
            assert_eq!((e.state, e.applied), (TxState::Committed, false));
            let e = p.end(&rolled_back.receipt, d).await.unwrap();
            assert_eq!((e.state, e.applied), (TxState::RolledBack, false));
        }
        let mut wrong = committed.receipt.clone();
        wrong.message_id = "someone-else".into();
        let e = p.end(&wrong, TxDecision::Commit).await.unwrap_err();
        assert_eq!(e.code(), Some(wasmq_client::ErrorCode::InvalidRequest), "{e}");
        let conn = broker.connect().await;
        let visible: Vec<String> = drain(&conn, "t", 1).await.iter().map(body).collect();
        assert_eq!(visible, vec!["committed"]);
        let stats = broker.admin().transactions().await.unwrap();
        assert_eq!((stats.committed, stats.rolled_back, stats.late_ends), (1, 1, 6));

        // A transactional message cannot also be scheduled; clients cannot write system topics.
        let m = OutgoingMessage::new(&b"x"[..]).with_delay(Duration::from_secs(5));
        let e = p.send("t", m, |_| TxDecision::Commit).await.unwrap_err();
        assert!(e.to_string().contains("cannot also be scheduled"), "{e}");
        let e = Producer::new(conn.clone(), "g").send("%HALF%", OutgoingMessage::new(&b"forged"[..])).await.unwrap_err();
        assert_eq!(e.code(), Some(wasmq_client::ErrorCode::InvalidTopic), "{e}");
        let e = p.send("missing", OutgoingMessage::new(&b"x"[..]), |_| TxDecision::Commit).await.unwrap_err();
        assert_eq!(e.code(), Some(wasmq_client::ErrorCode::UnknownTopic), "{e}");
        let e = PullConsumer::new(conn.clone()).pull("%HALF%", 0, 0, 10, Duration::ZERO).await.unwrap_err();
        assert_eq!(e.code(), Some(wasmq_client::ErrorCode::InvalidTopic), "half messages cannot be read: {e}");

        // Unknown at every check: discarded after the maximum (2 here), never delivered. The
        // producer asks for its first check after 200 ms instead of the broker's 1 s.
        let first_check: Arc<Mutex<Option<u64>>> = Arc::default();
        let f2 = Arc::clone(&first_check);
        let undecided = TransactionProducer::start(conn.clone(), "undecided", move |c: &TransactionCheck| {
            f2.lock().unwrap().get_or_insert(now_ms() - c.message.born_ms);
            TxDecision::Unknown
        })
        .await
        .unwrap()
        .with_check_after_ms(200);
        undecided.send("t", OutgoingMessage::new(&b"never"[..]), |_| TxDecision::Unknown).await.unwrap();
        let started = Instant::now();
        while broker.admin().transactions().await.unwrap().discarded == 0 {
            assert!(started.elapsed() < Duration::from_secs(15), "not discarded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = first_check.lock().unwrap().expect("checked");
        assert!((200..900).contains(&first), "first check {first} ms after the send, as the producer asked");
        let stats = broker.admin().transactions().await.unwrap();
        assert_eq!((stats.discarded, stats.checks_sent, stats.unknown_answers), (1, 2, 3), "the local unknown and two checks: {stats:?}");
    });
    // The CLI: a committed and a rolled-back transaction, and one left to the check-back that a
    // second CLI instance of the group answers.
    let out = broker.cli(&["send", "t", "cli-commit", "--transactional", "--group", "cli"]);
    assert!(out.contains("Commit → Committed"), "{out}");
    let out = broker.cli(&["send", "t", "cli-rollback", "--transactional", "--decision", "rollback", "--group", "cli"]);
    assert!(out.contains("Rollback → RolledBack"), "{out}");
    let out = broker.cli(&["send", "t", "cli-later", "--transactional", "--decision", "unknown", "--group", "cli"]);
    assert!(out.contains("Unknown → Pending"), "{out}");
    let listed: serde_json::Value = serde_json::from_str(&broker.cli(&["--output", "json", "transactions"])).unwrap();
    assert_eq!(listed["pending"][0]["pending"], 1, "{listed}");
    let out = broker.cli(&["send", "t", "cli-other", "--transactional", "--group", "cli", "--answer-checks-secs", "3"]);
    assert!(out.contains("check-back for transaction"), "{out}");
    wasmq_tests::runtime().block_on(async {
        wait_no_pending(&broker, Duration::from_secs(10)).await;
        let visible: Vec<String> = drain(&broker.connect().await, "t", 1).await.iter().map(body).collect();
        assert_eq!(visible.len(), 4, "{visible:?}");
        assert_eq!(
            visible.into_iter().collect::<HashSet<_>>(),
            ["committed", "cli-commit", "cli-other", "cli-later"].map(String::from).into()
        );
    });
}

/// Consumes `want` messages of `topic` by long polling; returns each with the time it arrived.
async fn receive(conn: &Connection, topic: &str, queues: u32, from: &mut [u64], want: usize, limit: Duration) -> Vec<(PulledMessage, u64)> {
    let c = PullConsumer::new(conn.clone());
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < want {
        assert!(started.elapsed() < limit, "only {} of {want} scheduled messages after {limit:?}", got.len());
        for q in 0..queues {
            let r = c.pull(topic, q, from[q as usize], 256, Duration::from_millis(50)).await.unwrap();
            let at = now_ms();
            from[q as usize] = r.next_offset;
            got.extend(r.messages.into_iter().map(|m| (m, at)));
        }
    }
    got
}

/// Checks that none arrived early — by the broker's store time and by this process's clock:
/// received no earlier than the time before its send plus its delay — and returns the lateness
/// (ms after due) of each. `sent`: body → (this clock's ms just before the send, the delay).
fn lateness(got: &[(PulledMessage, u64)], sent: &HashMap<String, (u64, u64)>) -> Vec<u64> {
    let mut late: Vec<u64> = got
        .iter()
        .map(|(m, at)| {
            let due = m.message.delivery_ms;
            assert!(due > 0, "the copy keeps its delivery time");
            assert!(m.store_ms >= due, "{} released at {} before it was due at {due}", body(m), m.store_ms);
            let (before_send, delay) = sent[&body(m)];
            // (1 ms for the clock's rounding to whole ms.)
            assert!(
                *at + 1 >= before_send + delay,
                "{} received at {at}, before its send ({before_send}) + its delay ({delay} ms)",
                body(m)
            );
            at.saturating_sub(due)
        })
        .collect();
    late.sort_unstable();
    late
}

/// The latest a scheduled message may be delivered after it is due (the broker's timer wakes
/// exactly when the first is due; the rest is the append and the consumer's long poll).
const LATE_MAX_MS: u64 = 300;

#[test]
fn scheduled_messages_arrive_when_due_never_early_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WASMQ_DELAY_MAX_MS", "60000")];
    let broker = Broker::start(dir.path(), &env);
    broker.cli(&["topic", "create", "reminders", "--queues", "2"]);
    let rt = wasmq_tests::runtime();
    let mut from = [0u64; 2];
    let mut sent: HashMap<String, (u64, u64)> = HashMap::new();
    rt.block_on(async {
        let conn = broker.connect().await;
        let p = Producer::new(conn.clone(), "reminder-service");
        for i in 0..200u64 {
            let delay = 1_000 + (i * 9_000) / 199;
            sent.insert(format!("r-{i}"), (now_ms(), delay));
            p.send("reminders", OutgoingMessage::new(format!("r-{i}").into_bytes()).with_delay(Duration::from_millis(delay)))
                .await
                .unwrap();
        }
        let e = p.send("reminders", OutgoingMessage::new(&b"too far"[..]).with_delay(Duration::from_secs(120))).await.unwrap_err();
        assert_eq!(e.code(), Some(wasmq_client::ErrorCode::InvalidRequest));
        assert!(e.to_string().contains("maximum delay is 60000 ms"), "{e}");
        let s = broker.admin().scheduled().await.unwrap();
        assert_eq!(s.pending, 200, "{s:?}");
        assert!(s.due_within.iter().any(|d| d.within_ms == 10_000 && d.count > 150), "{s:?}");
        assert!(drain(&conn, "reminders", 2).await.is_empty(), "nothing before it is due");
        let got = receive(&conn, "reminders", 2, &mut from, 200, Duration::from_secs(30)).await;
        let late = lateness(&got, &sent);
        println!("scheduled 1-10 s: lateness p50 {} ms, p99 {} ms, max {} ms", percentile(&late, 0.5), percentile(&late, 0.99), late[199]);
        assert!(late[199] <= LATE_MAX_MS, "every one within {LATE_MAX_MS} ms of due: {late:?}");
        assert_eq!(broker.admin().scheduled().await.unwrap().pending, 0);

        // Across a restart: scheduled, then the broker is killed and restarted before they are due.
        for i in 0..40u64 {
            let delay = 3_000 + (i * 7_000) / 39;
            sent.insert(format!("s-{i}"), (now_ms(), delay));
            p.send("reminders", OutgoingMessage::new(format!("s-{i}").into_bytes()).with_delay(Duration::from_millis(delay)))
                .await
                .unwrap();
        }
    });
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    let broker = Broker::restart_from(dir.path(), &env);
    rt.block_on(async {
        let conn = broker.connect().await;
        assert_eq!(broker.admin().scheduled().await.unwrap().pending, 40, "recovered from the log");
        let got = receive(&conn, "reminders", 2, &mut from, 40, Duration::from_secs(30)).await;
        let late = lateness(&got, &sent);
        println!("scheduled 3-10 s across a SIGKILL + restart: lateness p50 {} ms, max {} ms", percentile(&late, 0.5), late[39]);
        assert!(late[39] <= LATE_MAX_MS, "every one within {LATE_MAX_MS} ms of due: {late:?}");
        let all = drain(&conn, "reminders", 2).await;
        let ids: HashSet<String> = all.iter().map(body).collect();
        assert_eq!((all.len(), ids.len()), (240, 240), "each delivered exactly once, none again after the restart");
    });
}
