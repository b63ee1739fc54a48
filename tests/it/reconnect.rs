//! Clients across broker restarts: a producer, a pull consumer, a group member and a
//! transactional producer carry on by themselves after a graceful restart and after a SIGKILL;
//! the CLI's group consumer leaves its group at once on SIGTERM.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_client::{
    ConsumeResult, GroupConsumer, GroupOptions, OutgoingMessage, Producer, PullConsumer, PulledMessage, TransactionProducer, TxDecision,
};

use wasmq_tests::broker::Broker;
use wasmq_tests::runtime;

/// How soon after the broker is back each client must have succeeded again.
const CARRY_ON_WITHIN: Duration = Duration::from_secs(5);
const QUEUES: u32 = 4;

/// When each client last succeeded, by name.
type Progress = Arc<Mutex<HashMap<&'static str, Instant>>>;

fn progressed(p: &Progress, who: &'static str) {
    p.lock().unwrap().insert(who, Instant::now());
}

/// Waits until every client has succeeded after `since`; returns how long each took.
async fn all_carry_on(p: &Progress, since: Instant, what: &str) -> Vec<(&'static str, Duration)> {
    loop {
        let done: Vec<(&'static str, Duration)> =
            p.lock().unwrap().iter().filter(|(_, t)| **t > since).map(|(w, t)| (*w, t.duration_since(since))).collect();
        if done.len() == 4 {
            return done;
        }
        let waiting: Vec<&str> = p.lock().unwrap().iter().filter(|(_, t)| **t <= since).map(|(w, _)| *w).collect();
        assert!(since.elapsed() < CARRY_ON_WITHIN, "after the {what}, still waiting for {waiting:?} after {CARRY_ON_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn clients_carry_on_across_a_graceful_restart_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WASMQ_FLUSH", "sync"), ("WASMQ_GROUP_SESSION_TIMEOUT_MS", "3000"), ("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", "1000")];
    let broker = Broker::start(dir.path(), &env);
    broker.cli(&["topic", "create", "r", "--queues", &QUEUES.to_string()]);
    broker.cli(&["topic", "create", "ledger", "--queues", "2"]);
    let (listen, admin_listen, env_all) = (broker.listen.clone(), broker.admin_listen.clone(), broker.env().to_vec());
    let rt = runtime();
    let progress: Progress = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let pulled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let grouped: Arc<Mutex<Vec<String>>> = Arc::default();
    let committed: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tasks, member) = rt.block_on(async {
        let mut tasks = Vec::new();
        // A producer sending one message at a time.
        let producer = Producer::new(broker.connect().await, "p");
        let (p, a, s) = (progress.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                match producer.send("r", OutgoingMessage::new(format!("m-{i}").into_bytes())).await {
                    Ok(r) => {
                        a.lock().unwrap().push((r.queue_id, r.queue_offset, r.message_id));
                        progressed(&p, "producer");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                i += 1;
            }
        }));
        // A pull consumer reading every queue.
        let consumer = PullConsumer::new(broker.connect().await);
        let (p, seen, s) = (progress.clone(), pulled.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut at = [0u64; QUEUES as usize];
            while !s.load(Ordering::Relaxed) {
                for q in 0..QUEUES {
                    match consumer.pull("r", q, at[q as usize], 256, Duration::from_millis(100)).await {
                        Ok(r) => {
                            at[q as usize] = r.next_offset;
                            seen.lock().unwrap().extend(r.messages.into_iter().map(|m| m.message.unique_id));
                            progressed(&p, "pull consumer");
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
        // A group member.
        let mut o = GroupOptions::new("readers", "r");
        o.heartbeat_interval = Duration::from_millis(300);
        o.pull_wait = Duration::from_millis(300);
        let (p, g) = (progress.clone(), grouped.clone());
        let member = GroupConsumer::start(
            broker.connect().await,
            o,
            Arc::new(move |_t: &str, _q: u32, m: &PulledMessage| {
                g.lock().unwrap().push(m.message.unique_id.clone());
                progressed(&p, "group member");
                ConsumeResult::Success
            }),
        )
        .await
        .unwrap();
        // A transactional producer committing every transaction.
        let tx =
            TransactionProducer::start(broker.connect().await, "ledger-service", |_c: &wasmq_client::TransactionCheck| TxDecision::Commit)
                .await
                .unwrap();
        let (p, c, s) = (progress.clone(), committed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                match tx.send("ledger", OutgoingMessage::new(format!("t-{i}").into_bytes()), |_| TxDecision::Commit).await {
                    Ok(t) if matches!(&t.ended, Ok(e) if e.state == wasmq_client::TxState::Committed) => {
                        c.lock().unwrap().push(t.receipt.message_id);
                        progressed(&p, "transactional producer");
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                i += 1;
            }
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(progress.lock().unwrap().len(), 4, "every client works before the restarts");
        (tasks, member)
    });

    // A graceful restart, then a SIGKILL, on the same addresses.
    assert!(broker.stop().success());
    let broker = Broker::start_again(dir.path(), &env_all, &listen, &admin_listen);
    let back = Instant::now();
    let took = rt.block_on(all_carry_on(&progress, back, "graceful restart"));
    println!("after a graceful restart: {took:?}");
    broker.kill();
    let broker = Broker::start_again(dir.path(), &env_all, &listen, &admin_listen);
    let back = Instant::now();
    let took = rt.block_on(all_carry_on(&progress, back, "SIGKILL"));
    println!("after a SIGKILL: {took:?}");

    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        // Nothing acknowledged is lost: each is at its place, and both consumers got it.
        let acked = acked.lock().unwrap().clone();
        let check = PullConsumer::new(broker.connect().await);
        for (q, offset, id) in &acked {
            let r = check.pull("r", *q, *offset, 1, Duration::ZERO).await.unwrap();
            assert_eq!(r.messages.first().map(|m| m.message.unique_id.as_str()), Some(id.as_str()), "acknowledged {id} at {q}/{offset}");
        }
        let ids: HashSet<&String> = acked.iter().map(|a| &a.2).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let group: HashSet<String> = grouped.lock().unwrap().iter().cloned().collect();
            if ids.iter().all(|id| group.contains(*id)) {
                break;
            }
            assert!(Instant::now() < deadline, "the group member did not get every acknowledged message");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        member.shutdown().await;
        let pulled = pulled.lock().unwrap().clone();
        let unpulled = ids.iter().filter(|id| !pulled.contains(**id)).count();
        // The pull consumer stopped with the producer: at most its last round is missing.
        assert!(unpulled <= 64, "{unpulled} acknowledged messages never pulled");
        // The member re-reads at most what it had not committed when the broker went away:
        // a batch per queue, each time.
        let grouped = grouped.lock().unwrap().clone();
        let duplicates = grouped.len() - grouped.iter().collect::<HashSet<_>>().len();
        assert!(duplicates <= 2 * QUEUES as usize * 32, "{duplicates} duplicates in the group");
        // Every acknowledged commit is visible once.
        let visible: Vec<String> = {
            let c = PullConsumer::new(broker.connect().await);
            let mut all = Vec::new();
            for q in 0..2 {
                let mut at = 0;
                loop {
                    let r = c.pull("ledger", q, at, 1024, Duration::ZERO).await.unwrap();
                    if r.messages.is_empty() {
                        break;
                    }
                    at = r.next_offset;
                    all.extend(r.messages.into_iter().map(|m| m.message.unique_id));
                }
            }
            all
        };
        let visible_set: HashSet<&String> = visible.iter().collect();
        assert_eq!(visible.len(), visible_set.len(), "a commit visible twice");
        for id in committed.lock().unwrap().iter() {
            assert!(visible_set.contains(id), "acknowledged commit {id} not visible");
        }
        println!(
            "{} sends acknowledged, {} pulled, {} handled by the group ({duplicates} again), {} commits",
            acked.len(),
            pulled.len(),
            grouped.len(),
            committed.lock().unwrap().len()
        );
    });
}

/// `wasmq consume --group` stopped with SIGTERM leaves its group: the other member takes its
/// queues in under a second.
#[test]
fn the_cli_consumer_leaves_its_group_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), &[("WASMQ_GROUP_SESSION_TIMEOUT_MS", "30000")]);
    broker.cli(&["topic", "create", "work", "--queues", "4"]);
    let mut cli =
        broker.cli_command(&["consume", "work", "--group", "g"]).stdout(std::process::Stdio::null()).spawn().expect("start wasmq");
    let rt = runtime();
    rt.block_on(async {
        let seen: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let s = seen.clone();
        let mut o = GroupOptions::new("g", "work");
        o.heartbeat_interval = Duration::from_millis(200);
        o.pull_wait = Duration::from_millis(200);
        let member = GroupConsumer::start(
            broker.connect().await,
            o,
            Arc::new(move |_t: &str, q: u32, _m: &PulledMessage| {
                s.lock().unwrap().insert(q);
                ConsumeResult::Success
            }),
        )
        .await
        .unwrap();
        // Both members hold queues: the CLI's are the ones this member never handles.
        let admin = broker.admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin.describe_group("g").await.unwrap().members.len() < 2 {
            assert!(Instant::now() < deadline, "the CLI never joined");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let producer = Producer::new(broker.connect().await, "p");
        for q in 0..4 {
            producer.send_batch_to("work", q, vec![OutgoingMessage::new(&b"before"[..])]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mine = seen.lock().unwrap().clone();
        assert!(mine.len() < 4, "the CLI holds some queues: {mine:?}");
        // SIGTERM the CLI; then every queue must reach this member within a second.
        // SAFETY: kill(2) with a pid we own; no memory is passed.
        unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
        let termed = Instant::now();
        let status = cli.wait().unwrap();
        assert!(status.success(), "the CLI exits cleanly on SIGTERM: {status:?}");
        loop {
            for q in 0..4 {
                producer.send_batch_to("work", q, vec![OutgoingMessage::new(&b"after"[..])]).await.unwrap();
            }
            if seen.lock().unwrap().len() == 4 {
                break;
            }
            assert!(termed.elapsed() < Duration::from_secs(1), "the CLI's queues did not move within a second");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("the CLI's queues moved {:?} after its SIGTERM", termed.elapsed());
        member.shutdown().await;
    });
}
