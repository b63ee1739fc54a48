//! Master/slave replication of a broker set: real broker processes over TLS, masters killed
//! with SIGKILL while producers run at full speed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_client::{Connection, ErrorCode, OutgoingMessage, Producer, PullConsumer, SendStatus};
use wasmq_protocol::{OffsetCommitRequest, OffsetQueryRequest, Request, Response};
use wasmq_tests::broker::Broker;

/// Small segments, so the log rolls several times and replication crosses segment ends.
const SEGMENT: (&str, &str) = ("WASMQ_SEGMENT_BYTES", "16777216");
/// Small segments are deleted by disk-use retention on a machine whose disk is over 75 % full;
/// these tests read every message back, so only a full disk may delete them.
const KEEP: (&str, &str) = ("WASMQ_RETENTION_DISK_PERCENT", "99");
const QUEUES: u32 = 4;

/// (queue, queue offset) → message id of everything acknowledged with `SendStatus::Ok`.
type Acked = Arc<Mutex<HashMap<(u32, u64), (String, u64)>>>;

async fn replicas(b: &Broker) -> wasmq_client::admin_types::ReplicaStatus {
    b.admin().replicas().await.unwrap()
}

/// Waits until the master's slave holds everything the master has.
async fn wait_caught_up(master: &Broker, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let r = replicas(master).await;
        if r.slaves.iter().any(|s| s.connected && s.acked_offset >= r.log_end_offset) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "the slave did not catch up within {limit:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the slave knows `topic` (topics reach it with the metadata, every second).
async fn wait_topic_on(slave: &Broker, topic: &str) {
    let c = PullConsumer::new(slave.connect().await);
    let started = Instant::now();
    while c.pull(topic, 0, 0, 1, Duration::ZERO).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "{topic} never reached the slave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produces batches from `tasks` producers until `stop` or the first error; records what was
/// acknowledged OK, failing if a (queue, offset) is acknowledged for two different messages
/// (the earlier one lost and its place reused). Returns how many messages had another status.
fn produce(conn: Connection, acked: &Acked, tasks: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..tasks)
        .map(|_| {
            let (p, acked, stop) = (Producer::new(conn.clone(), "replicated").with_retries(0), Arc::clone(acked), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut not_ok = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch = (0..16).map(|_| OutgoingMessage::new(vec![b'r'; 200])).collect();
                    let Ok(receipts) = p.send_batch("t", batch).await else { break };
                    for r in receipts {
                        if r.status == SendStatus::Ok {
                            let at = (r.queue_id, r.queue_offset);
                            if let Some((earlier, _)) = acked.lock().unwrap().insert(at, (r.message_id.clone(), r.log_offset)) {
                                assert_eq!(earlier, r.message_id, "queue {} offset {} acknowledged OK for two messages", at.0, at.1);
                            }
                        } else {
                            not_ok += 1;
                        }
                    }
                }
                not_ok
            })
        })
        .collect()
}

/// Every acknowledged message is at its (queue, offset) in `queues` (each queue's ids by queue
/// offset, from 0).
fn all_acked_in(queues: &[Vec<String>], acked: &Acked, what: &str) {
    let acked = acked.lock().unwrap();
    assert!(!acked.is_empty(), "{what}: nothing was acknowledged OK");
    for ((q, offset), (id, _)) in acked.iter() {
        let found = queues[*q as usize].get(*offset as usize);
        assert_eq!(found, Some(id), "{what}: acknowledged {id} is not at queue {q} offset {offset}");
    }
}

/// Every message of a queue of `b`, by queue offset.
async fn read_queue(b: &Broker, queue: u32) -> Vec<String> {
    let c = PullConsumer::new(b.connect().await);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = c.pull("t", queue, offset, 1024, Duration::ZERO).await.unwrap();
        if r.messages.is_empty() {
            return out;
        }
        offset = r.next_offset;
        out.extend(r.messages.into_iter().map(|m| m.message.unique_id));
    }
}

fn start_pair(m: &std::path::Path, s: &std::path::Path, replication: &str) -> (Broker, Broker) {
    let master = Broker::start(m, &[SEGMENT, KEEP, ("WASMQ_REPLICATION", replication), ("WASMQ_REPLICA_TIMEOUT_MS", "3000")]);
    master.cli(&["topic", "create", "t", "--queues", &QUEUES.to_string()]);
    let slave = Broker::start_slave(s, &master, &[KEEP]);
    (master, slave)
}

async fn commit_offset(b: &Broker, queue: u32, offset: u64) {
    let req = Request::OffsetCommit(OffsetCommitRequest { group: "readers".into(), topic: "t".into(), queue_id: queue, offset });
    b.connect().await.call(&req).await.unwrap();
}

async fn query_offset(b: &Broker, queue: u32) -> Option<u64> {
    let req = Request::OffsetQuery(OffsetQueryRequest { group: "readers".into(), topic: "t".into(), queue_id: queue });
    match b.connect().await.call(&req).await.unwrap() {
        Response::OffsetQuery(q) => q.offset,
        other => panic!("{other:?}"),
    }
}

/// Reads the slave from `from` (per queue) and checks every message acknowledged OK is there,
/// at its offset; returns where each queue ends on the slave.
async fn check_on_slave(slave: &Broker, acked: &Acked, from: [u64; QUEUES as usize], what: &str) -> [u64; QUEUES as usize] {
    let acked = acked.lock().unwrap().clone();
    let pull = PullConsumer::new(slave.connect().await);
    let mut ends = from;
    for q in 0..QUEUES {
        let want_end = acked.keys().filter(|(aq, _)| *aq == q).map(|(_, o)| o + 1).max().unwrap_or(0);
        let mut offset = from[q as usize];
        loop {
            let r = pull.pull("t", q, offset, 1024, Duration::ZERO).await.unwrap();
            if r.messages.is_empty() {
                break;
            }
            for msg in &r.messages {
                if let Some((id, _)) = acked.get(&(q, msg.queue_offset)) {
                    assert_eq!(&msg.message.unique_id, id, "{what}: queue {q} offset {} holds another message", msg.queue_offset);
                }
            }
            offset = r.next_offset;
        }
        assert!(offset >= want_end, "{what}: queue {q} ends at {offset} on the slave; acknowledged OK up to {want_end}");
        ends[q as usize] = offset;
    }
    ends
}

/// Runs producers against the master for `run`, SIGKILLs the master while they send, and
/// waits for them to notice. Returns the batches answered with a status other than OK.
async fn produce_then_kill(master: Broker, acked: &Acked, run: Duration) -> u64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = produce(master.connect().await, acked, 2, Arc::clone(&stop));
    tokio::time::sleep(run).await;
    master.kill();
    let mut not_ok = 0;
    for t in tasks {
        not_ok += t.await.unwrap();
    }
    not_ok
}

/// Waits until process `pid` is stopped (state `T` in `/proc/PID/stat`).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop: {stat}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sync_replication_loses_nothing_acknowledged_across_master_kills() {
    let cycles: usize = std::env::var("WASMQ_REPLICATION_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, slave) = start_pair(m.path(), s.path(), "sync");
    let (listen, admin_listen, env) = (master.listen.clone(), master.admin_listen.clone(), master.env().to_vec());
    let mut master = Some(master);
    let rt = wasmq_tests::runtime();
    let acked: Acked = Arc::default();
    let mut consumed = [0u64; QUEUES as usize];
    let mut not_ok = 0;
    rt.block_on(async {
        wait_topic_on(&slave, "t").await;
        // Producing to the slave is refused, with the master named.
        let e = Producer::new(slave.connect().await, "p").send("t", OutgoingMessage::new(&b"x"[..])).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotMaster), "{e}");
        assert!(e.to_string().contains(&listen), "{e}");
        let e = slave.admin().create_topic("u", 1).await.unwrap_err();
        assert!(matches!(e, wasmq_client::ClientError::Admin { status: 409, .. }), "{e}");
    });
    for cycle in 0..cycles {
        rt.block_on(async {
            let m = master.take().unwrap();
            wait_caught_up(&m, Duration::from_secs(20)).await;
            let before = acked.lock().unwrap().len();
            let this_cycle = produce_then_kill(m, &acked, Duration::from_millis(600)).await;
            not_ok += this_cycle;
            let after = acked.lock().unwrap().len();
            assert!(after > before, "cycle {cycle}: no message acknowledged OK ({this_cycle} answered otherwise)");
            // Everything acknowledged OK is on the slave; a consumer carries on from the slave
            // and commits its offsets there.
            consumed = check_on_slave(&slave, &acked, consumed, &format!("cycle {cycle}")).await;
            for q in 0..QUEUES {
                commit_offset(&slave, q, consumed[q as usize]).await;
            }
        });
        master = Some(Broker::start_again(m.path(), &env, &listen, &admin_listen));
    }
    let master = master.unwrap();
    rt.block_on(async {
        let took = wait_caught_up(&master, Duration::from_secs(20)).await;
        // Every message acknowledged OK is on both, at its offset, and the pair agrees on
        // every offset of every queue.
        let (mut on_master, mut on_slave) = (Vec::new(), Vec::new());
        for q in 0..QUEUES {
            on_master.push(read_queue(&master, q).await);
            on_slave.push(read_queue(&slave, q).await);
        }
        all_acked_in(&on_master, &acked, "master");
        all_acked_in(&on_slave, &acked, "slave");
        for q in 0..QUEUES as usize {
            assert_eq!(on_master[q].len(), on_slave[q].len(), "queue {q}: lengths differ");
            assert!(on_master[q] == on_slave[q], "queue {q}: master and slave hold different messages");
        }
        // The offsets committed on the slave reached the master (handed over within a second).
        let started = Instant::now();
        for q in 0..QUEUES {
            while query_offset(&master, q).await < Some(consumed[q as usize]) {
                assert!(started.elapsed() < Duration::from_secs(10), "queue {q}: the slave's committed offset never reached the master");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A slave that stops answering: the send waits for it, then says so; a slave that is
        // gone: the send says so at once. Either way the message is on the master.
        let p = Producer::new(master.connect().await, "p").with_retries(0);
        // SAFETY: kill(2) with a pid we own; no memory is passed.
        unsafe { libc::kill(slave.child.id() as i32, libc::SIGSTOP) };
        // kill(2) returns before the slave has stopped: one already running could still fetch
        // and acknowledge the next send. Wait until the kernel reports it stopped.
        wait_stopped(slave.child.id());
        let t = Instant::now();
        let r = p.send("t", OutgoingMessage::new(&b"while the slave is frozen"[..])).await.unwrap();
        assert_eq!(r.status, SendStatus::FlushSlaveTimeout, "after {:?}", t.elapsed());
        assert!(t.elapsed() >= Duration::from_millis(2_900), "waited the replica timeout: {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let r = p.send("t", OutgoingMessage::new(&b"while the slave is away"[..])).await.unwrap();
        assert_eq!(r.status, SendStatus::SlaveNotAvailable);
        assert!(t.elapsed() < Duration::from_millis(500), "not waited for: {:?}", t.elapsed());
        // SAFETY: as above.
        unsafe { libc::kill(slave.child.id() as i32, libc::SIGCONT) };
        wait_caught_up(&master, Duration::from_secs(20)).await;
        let r = p.send("t", OutgoingMessage::new(&b"back"[..])).await.unwrap();
        assert_eq!(r.status, SendStatus::Ok);

        let n = acked.lock().unwrap().len();
        println!(
            "sync replication: {cycles} master SIGKILLs under load, {n} messages acknowledged OK, all on the slave (0 lost); \
             {not_ok} messages answered without OK; last re-sync {took:?}"
        );
    });
}

#[test]
fn async_replication_loses_at_most_the_reported_lag() {
    let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, slave) = start_pair(m.path(), s.path(), "async");
    let (listen, admin_listen, env) = (master.listen.clone(), master.admin_listen.clone(), master.env().to_vec());
    let mut master = Some(master);
    let rt = wasmq_tests::runtime();
    let acked: Acked = Arc::default();
    for cycle in 0..3 {
        rt.block_on(async {
            let m = master.take().unwrap();
            wait_caught_up(&m, Duration::from_secs(20)).await;
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let before = acked.lock().unwrap().len();
            let tasks = produce(m.connect().await, &acked, 2, Arc::clone(&stop));
            // Replication lag under load, as the master reports it.
            let mut lag: Vec<(u64, u64)> = Vec::new();
            let until = Instant::now() + Duration::from_millis(600);
            while Instant::now() < until {
                let s = replicas(&m).await.slaves.remove(0);
                lag.push((s.lag_bytes, s.lag_ms));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lag.sort_unstable();
            let (p50, max) = (lag[lag.len() / 2], lag[lag.len() - 1]);
            println!("async replication under load: lag p50 {} bytes / {} ms, max {} bytes / {} ms ({} samples)", p50.0, p50.1, max.0, max.1, lag.len());
            // What the master reports just before the kill: the slave holds everything below
            // its acknowledged offset.
            let r = replicas(&m).await;
            let slave_acked = r.slaves[0].acked_offset;
            m.kill();
            for t in tasks {
                t.await.unwrap();
            }
            let acked_now = acked.lock().unwrap().clone();
            assert!(acked_now.len() > before, "cycle {cycle}: no message acknowledged OK");
            let on_slave: std::collections::HashSet<String> = {
                let mut all = std::collections::HashSet::new();
                for q in 0..QUEUES {
                    all.extend(read_queue(&slave, q).await);
                }
                all
            };
            let below: Vec<_> = acked_now.values().filter(|(_, log_offset)| *log_offset < slave_acked).collect();
            // Acknowledged messages the slave had acknowledged in turn: the bound means nothing
            // without them.
            assert!(!below.is_empty(), "cycle {cycle}: nothing acknowledged below the slave's acknowledged offset {slave_acked}");
            for (id, log_offset) in &below {
                assert!(on_slave.contains(id), "cycle {cycle}: {id} at {log_offset} was reported replicated (< {slave_acked}) but is not on the slave");
            }
            let missing = acked_now.values().filter(|(id, _)| !on_slave.contains(id)).count();
            println!(
                "async replication, kill {cycle}: lag reported just before the kill {} bytes; {missing} of {} acknowledged messages not on the slave at the kill",
                r.slaves[0].lag_bytes,
                acked_now.len()
            );
        });
        master = Some(Broker::start_again(m.path(), &env, &listen, &admin_listen));
    }
    rt.block_on(async {
        let m = master.as_ref().unwrap();
        wait_caught_up(m, Duration::from_secs(20)).await;
        let mut on_master = Vec::new();
        for q in 0..QUEUES {
            on_master.push(read_queue(m, q).await);
            assert!(on_master[q as usize] == read_queue(&slave, q).await, "queue {q}: master and slave differ after the re-sync");
        }
        // The master was killed, not powered off: it kept everything it acknowledged.
        all_acked_in(&on_master, &acked, "master after the re-sync");
    });
}

#[test]
fn a_slave_down_for_100k_messages_catches_up() {
    let (m, s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (master, slave) = start_pair(m.path(), s.path(), "async");
    let slave_env = slave.env().to_vec();
    let rt = wasmq_tests::runtime();
    rt.block_on(async {
        wait_topic_on(&slave, "t").await;
        wait_caught_up(&master, Duration::from_secs(20)).await;
    });
    // A group's settings reach the slave with the topics (a slave that takes over hands out a
    // FIFO group's messages in order too).
    master.cli(&["group", "set", "ordered", "--fifo", "true"]);
    rt.block_on(async {
        let started = Instant::now();
        while !slave.admin().describe_group("ordered").await.is_ok_and(|g| g.fifo) {
            assert!(started.elapsed() < Duration::from_secs(5), "the slave never took the FIFO setting");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(slave.stop().success());
    rt.block_on(async {
        let p = Producer::new(master.connect().await, "bulk");
        for i in 0..1_000 {
            let batch = (0..100).map(|j| OutgoingMessage::new(format!("{i}-{j}-{}", "x".repeat(180)).into_bytes())).collect();
            p.send_batch("t", batch).await.unwrap();
        }
        let started = Instant::now();
        let s = loop {
            let s = replicas(&master).await.slaves.remove(0);
            if !s.connected {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "the stopped slave is still reported connected: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(s.lag_bytes > 20_000_000 && s.lag_ms > 1_000, "the stopped slave is reported behind, in bytes and time: {s:?}");
    });
    let slave = Broker::start(s.path(), &slave_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
    rt.block_on(async {
        let behind = replicas(&master).await.log_end_offset;
        let started = Instant::now();
        let mut samples = Vec::new();
        loop {
            let r = replicas(&master).await;
            let lag = r.slaves[0].lag_bytes;
            samples.push(lag);
            if r.slaves[0].connected && lag == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no catch-up within 60 s: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let slave_view = replicas(&slave).await;
        assert_eq!(slave_view.master.as_ref().map(|m| m.lag_bytes), Some(0), "{slave_view:?}");
        let mut total = 0;
        for q in 0..QUEUES {
            total += read_queue(&slave, q).await.len();
        }
        assert_eq!(total, 100_000);
        println!(
            "catch-up: 100k messages ({:.1} MB of log) in {secs:.2} s = {:.0} MB/s; lag samples (bytes) {:?}",
            behind as f64 / 1e6,
            behind as f64 / 1e6 / secs,
            samples.iter().step_by((samples.len() / 8).max(1)).collect::<Vec<_>>()
        );
        // The CLI shows the broker set.
        let out = master.cli(&["cluster", "status"]);
        assert!(out.contains("master") && out.contains("slave") && out.contains("connected"), "{out}");
    });
}

/// A master that lost data its slave holds (a power loss under async flush, nothing fsynced) is
/// not followed: the slave refuses the shorter log ("diverged"), says so in its status, and
/// keeps every byte it has.
#[test]
fn a_slave_ahead_of_a_master_that_lost_data_refuses_to_follow_it() {
    let (m, s, j) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let journal = j.path().join("io-journal");
    let master_env = [
        SEGMENT,
        KEEP,
        ("WASMQ_REPLICATION", "async"),
        ("WASMQ_FLUSH_INTERVAL_MS", "600000"),
        (wasmq_store::JOURNAL_ENV, journal.to_str().unwrap()),
    ];
    let master = Broker::start(m.path(), &master_env);
    master.cli(&["topic", "create", "t", "--queues", &QUEUES.to_string()]);
    let slave = Broker::start_slave(s.path(), &master, &[KEEP]);
    let (listen, admin_listen, env) = (master.listen.clone(), master.admin_listen.clone(), master.env().to_vec());
    let rt = wasmq_tests::runtime();
    let slave_end = rt.block_on(async {
        wait_topic_on(&slave, "t").await;
        let p = Producer::new(master.connect().await, "p");
        for i in 0..100 {
            let batch = (0..20).map(|j| OutgoingMessage::new(format!("{i}-{j}").into_bytes())).collect();
            p.send_batch("t", batch).await.unwrap();
        }
        wait_caught_up(&master, Duration::from_secs(20)).await;
        replicas(&slave).await.log_end_offset
    });
    // Every log byte the master wrote since its last fsync is lost: with a 10-minute flush
    // interval, all of them.
    let loss = master.lose_power(&journal, wasmq_tests::power_loss::Mode::All(wasmq_tests::power_loss::Damage::Zeroed));
    println!("master power loss: {loss}");
    let master = Broker::start_again(m.path(), &env, &listen, &admin_listen);
    rt.block_on(async {
        let master_end = replicas(&master).await.log_end_offset;
        assert!(master_end < slave_end, "the master lost data: its log ends at {master_end}, the slave's at {slave_end}");
        let started = Instant::now();
        let error = loop {
            let status = replicas(&slave).await.master.expect("a slave reports its master");
            if let Some(e) = status.error.clone().filter(|e| e.contains("diverged")) {
                assert!(!status.connected, "{status:?}");
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the slave did not refuse the shorter master: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(error.contains(&slave_end.to_string()) && error.contains(&master_end.to_string()), "names both ends: {error}");
        // The slave keeps what it has, and keeps refusing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(replicas(&slave).await.log_end_offset, slave_end, "the slave's log is untouched");
        let mut total = 0;
        for q in 0..QUEUES {
            total += read_queue(&slave, q).await.len();
        }
        assert_eq!(total, 2_000, "every message is still on the slave");
        let on_master = replicas(&master).await;
        assert!(
            on_master.slaves.iter().all(|s| s.acked_offset <= master_end),
            "the master records no acknowledgement past its end: {on_master:?}"
        );
    });
}
