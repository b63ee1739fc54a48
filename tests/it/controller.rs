//! The failover controller as processes: three `wasmq-broker controller` nodes over TLS, killed
//! with SIGKILL and started again on their files; the brokers of a set played by the test
//! (heartbeats through `wasmq_controller_api::Client`, as a broker sends them); the operator through
//! the `wasmq` CLI.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmq_controller_api::rpc::{Answer, Call, Heartbeat};
use wasmq_controller_api::{BrokerSet, Client};
use wasmq_tests::broker::{Broker, Controller, cli_binary, free_addr};
use wasmq_tests::netns::{Lab, Side};

/// A master silent this long is replaced (short, for the test).
const MASTER_TIMEOUT_MS: u64 = 1_500;
/// How often the test's brokers send heartbeats.
const BEAT: Duration = Duration::from_millis(200);

struct Nodes {
    nodes: Vec<Option<Controller>>,
    addrs: Vec<(u64, String)>,
    ca: std::path::PathBuf,
    /// The certificate, key and CA every node, broker and name server uses.
    files: (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf),
    dirs: Vec<tempfile::TempDir>,
    master_timeout_ms: u64,
}

impl Nodes {
    /// Three nodes; the first generates the certificate all three use.
    fn start() -> Self {
        Self::start_with(MASTER_TIMEOUT_MS)
    }

    /// [`Nodes::start`] replacing a master silent `master_timeout_ms`.
    fn start_with(master_timeout_ms: u64) -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let addrs: Vec<(u64, String)> = (1..=3).map(|id| (id, free_addr())).collect();
        let first = Controller::start(1, &addrs, dirs[0].path(), None, master_timeout_ms);
        let (cert, key, ca) = first.tls_files();
        let mut nodes = vec![Some(first)];
        for (i, d) in dirs.iter().enumerate().skip(1) {
            nodes.push(Some(Controller::start(i as u64 + 1, &addrs, d.path(), Some((&cert, &key, &ca)), master_timeout_ms)));
        }
        Self { nodes, addrs, ca: ca.clone(), files: (cert, key, ca), dirs, master_timeout_ms }
    }

    /// Three nodes inside `side` of `lab` on ports 7101–7103 of its address, with the
    /// certificate, key and CA `files`.
    fn start_in(lab: &Lab, side: Side, files: (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)) -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let addrs: Vec<(u64, String)> = (1..=3).map(|id| (id, format!("{}:{}", side.ip(), 7100 + id))).collect();
        let nodes = dirs
            .iter()
            .zip(&addrs)
            .map(|(d, (id, _))| {
                Some(Controller::start_in(lab, side, *id, &addrs, d.path(), (&files.0, &files.1, &files.2), MASTER_TIMEOUT_MS))
            })
            .collect();
        Self { nodes, addrs, ca: files.2.clone(), files, dirs, master_timeout_ms: MASTER_TIMEOUT_MS }
    }

    fn list(&self) -> String {
        self.addrs.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(",")
    }

    fn client(&self) -> Client {
        Client::new(self.addrs.iter().map(|(_, a)| a.clone()).collect(), &self.ca)
    }

    /// `wasmq cluster ARGS --controller …`: (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(cli_binary())
            .arg("--ca")
            .arg(&self.ca)
            .arg("cluster")
            .args(args)
            .args(["--controller", &self.list()])
            .output()
            .expect("run wasmq");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `wasmq cluster status --json`, retried while no leader answers (an election going on).
    fn status(&self) -> Value {
        let started = Instant::now();
        loop {
            let (ok, out, err) = self.cli(&["status", "--json"]);
            if ok {
                return serde_json::from_str(&out).expect("status JSON");
            }
            assert!(started.elapsed() < Duration::from_secs(15), "no controller leader answered for 15 s: {err}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the leader; its index in `nodes`.
    fn kill_leader(&mut self) -> usize {
        let leader = self.status()["node"].as_u64().expect("leader id");
        let i = leader as usize - 1;
        self.nodes[i].take().expect("the leader is running").kill();
        i
    }

    /// Starts node `i` again on its files.
    fn restart(&mut self, i: usize, ca_files: (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)) {
        let (id, _) = self.addrs[i].clone();
        let dir = self.dirs[i].path().to_owned();
        let tls = if i == 0 { None } else { Some((ca_files.0.as_path(), ca_files.1.as_path(), ca_files.2.as_path())) };
        self.nodes[i] = Some(Controller::start(id, &self.addrs, &dir, tls, self.master_timeout_ms));
    }

    /// The certificate, key and CA of every node (node 1's, generated, unless given).
    fn tls_files(&self) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        self.files.clone()
    }
}

/// One broker of the test: it sends heartbeats every [`BEAT`] while `alive`, keeps the epoch it
/// is told, and — while the controller names it master — reports `in_sync` (and itself) in sync.
struct FakeBroker {
    alive: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    /// The master timeout the controller last told it.
    timeout_ms: Arc<AtomicU64>,
}

fn fake_broker(rt: &tokio::runtime::Runtime, nodes: &Nodes, set: &str, id: u32, log_end: u64, in_sync: &[u32]) -> FakeBroker {
    let (alive, epoch, timeout_ms) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a, e, t, client) = (Arc::clone(&alive), Arc::clone(&epoch), Arc::clone(&timeout_ms), nodes.client());
    let (set, in_sync): (String, BTreeSet<u32>) = (set.to_owned(), in_sync.iter().copied().chain([id]).collect());
    rt.spawn(async move {
        let mut master = false;
        while a.load(Ordering::SeqCst) {
            let h = Heartbeat {
                set: set.clone(),
                id,
                addr: format!("127.0.0.1:{}", 10_000 + id),
                epoch: e.load(Ordering::SeqCst),
                log_end,
                in_sync: master.then(|| in_sync.clone()),
            };
            if let Ok(Answer::Beat { set: s, master_timeout_ms }) = client.call(&Call::Heartbeat(h)).await {
                t.store(master_timeout_ms, Ordering::SeqCst);
                e.store(s.epoch, Ordering::SeqCst);
                master = s.master == Some(id);
            }
            tokio::time::sleep(BEAT).await;
        }
    });
    FakeBroker { alive, epoch, timeout_ms }
}

/// The set `name` as the controller's status shows it, once `pred` holds (within `within`).
fn wait_set(nodes: &Nodes, name: &str, within: Duration, what: &str, pred: impl Fn(&BrokerSet) -> bool) -> (BrokerSet, Duration) {
    let started = Instant::now();
    loop {
        let status = nodes.status();
        if let Some(s) = status["sets"].get(name) {
            let set: BrokerSet = serde_json::from_value(s["set"].clone()).expect("a broker set");
            if pred(&set) {
                return (set, started.elapsed());
            }
            assert!(started.elapsed() < within, "{what}: not within {within:?}; set {name} is {set:?}");
        } else {
            assert!(started.elapsed() < within, "{what}: set {name} unknown after {within:?}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three controller nodes and a broker set of three: the first broker to register is master in
/// epoch 1 and its report makes all three in sync; when the master falls silent, the most
/// advanced in-sync member is elected within the master timeout (plus a watch tick and a
/// commit), in epoch 2. The controller leader killed: the other two elect one, which keeps the
/// state and carries on; the CLI shows nodes, sets, lag. An operator's switchover to an
/// out-of-sync member is refused, to an in-sync one applied; an unclean election is applied when
/// asked for. The killed node, started again on its files, rejoins.
#[test]
fn three_controllers_fail_a_silent_master_over_and_survive_their_leader() {
    let mut nodes = Nodes::start();
    let rt = wasmq_tests::runtime();
    // Broker 0 registers first: the master of set "a" in epoch 1.
    let b0 = fake_broker(&rt, &nodes, "a", 0, 1_000, &[0, 1, 2]);
    wait_set(&nodes, "a", Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0) && s.epoch == 1);
    let _b1 = fake_broker(&rt, &nodes, "a", 1, 500, &[1]);
    let b2 = fake_broker(&rt, &nodes, "a", 2, 700, &[1, 2]);
    let (set, _) = wait_set(&nodes, "a", Duration::from_secs(10), "all three in sync", |s| s.in_sync.len() == 3);
    assert_eq!(b0.timeout_ms.load(Ordering::SeqCst), MASTER_TIMEOUT_MS, "heartbeats are answered with the master timeout");
    assert_eq!(set.members.len(), 3, "{set:?}");
    let (ok, text, err) = nodes.cli(&["status"]);
    assert!(ok, "{err}");
    assert!(text.contains("broker set a: master 0, epoch 1, in sync [0, 1, 2]"), "{text}");
    assert!(text.contains("leader"), "{text}");
    // Each member's log end and lag behind the master's (1000).
    let row = |id: &str| -> Vec<String> {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(id)).unwrap_or_else(|| panic!("no row {id}: {text}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(row("0")[1..5], ["master", "127.0.0.1:10000", "1000", "0"], "{text}");
    assert_eq!(row("1")[1..6], ["slave", "127.0.0.1:10001", "500", "500", "yes"], "{text}");
    assert_eq!(row("2")[1..6], ["slave", "127.0.0.1:10002", "700", "300", "yes"], "{text}");

    // The master falls silent: broker 2 (furthest of the in-sync others) takes over in epoch 2.
    b0.alive.store(false, Ordering::SeqCst);
    let silent_at = Instant::now();
    let (set, _) = wait_set(&nodes, "a", Duration::from_secs(10), "failover to broker 2", |s| s.epoch == 2);
    let took = silent_at.elapsed();
    // The old master leaves the in-sync set; the other in-sync member stays.
    assert_eq!((set.master, set.in_sync.iter().copied().collect::<Vec<_>>()), (Some(2), vec![1, 2]), "{set:?}");
    eprintln!("master silent → new master elected: {} ms (master timeout {MASTER_TIMEOUT_MS} ms)", took.as_millis());
    // Its last heartbeat went out at most one beat (and a call) before it was stopped.
    assert!(took >= Duration::from_millis(MASTER_TIMEOUT_MS) - BEAT - Duration::from_millis(100), "elected too early: {took:?}");
    assert!(took < Duration::from_millis(MASTER_TIMEOUT_MS + 2_000), "elected too late: {took:?}");
    // The new master's broker learned its epoch from the heartbeat answer.
    let started = Instant::now();
    while b2.epoch.load(Ordering::SeqCst) != 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "broker 2 never learned epoch 2");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The controller leader dies: the other two go on with the same state.
    let files = nodes.tls_files();
    let killed = nodes.kill_leader();
    let status = nodes.status();
    assert_ne!(status["node"].as_u64(), Some(killed as u64 + 1), "a new leader: {status}");
    let (set, _) = wait_set(&nodes, "a", Duration::from_secs(10), "the state kept", |s| s.epoch == 2);
    assert_eq!(set.master, Some(2));
    let (_, text, _) = nodes.cli(&["status"]);
    assert!(text.contains(&format!("node {} {} down", killed + 1, nodes.addrs[killed].1)), "{text}");
    // A switchover to 0 (silent, out of sync) is refused.
    let (ok, _, err) = nodes.cli(&["elect", "a", "--to", "0"]);
    assert!(!ok && err.contains("broker 0 is not in sync"), "{err}");
    let (ok, out, err) = nodes.cli(&["elect", "a", "--to", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("broker set a: master 1 in epoch 3"), "{out}");
    let (ok, out, err) = nodes.cli(&["elect", "a", "--to", "0", "--unclean"]);
    assert!(ok, "{err}");
    assert!(out.contains("master 0 in epoch 4") && err.contains("UNCLEAN"), "{out} {err}");

    // The killed node comes back on its files and is a follower again.
    nodes.restart(killed, files);
    let started = Instant::now();
    loop {
        let status = nodes.status();
        let up: Vec<u64> = status["nodes_up"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
        if up.len() == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "node {} did not rejoin: {status}", killed + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The controller leader killed around the moment a silent master's timeout runs out — before,
/// at and after — still ends, each time, with exactly one master: the most advanced in-sync
/// member, elected once (epoch 2, not 3), whichever leader did it.
#[test]
fn a_controller_leader_killed_mid_election_still_ends_with_one_master() {
    let mut nodes = Nodes::start();
    let rt = wasmq_tests::runtime();
    let files = nodes.tls_files();
    for (round, offset_ms) in [-300_i64, 0, 150].into_iter().enumerate() {
        let set = format!("s{round}");
        let b0 = fake_broker(&rt, &nodes, &set, 0, 900, &[0, 1, 2]);
        wait_set(&nodes, &set, Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0));
        let b1 = fake_broker(&rt, &nodes, &set, 1, 800, &[]);
        let b2 = fake_broker(&rt, &nodes, &set, 2, 850, &[]);
        wait_set(&nodes, &set, Duration::from_secs(10), "all in sync", |s| s.in_sync.len() == 3);
        b0.alive.store(false, Ordering::SeqCst);
        let wait = i64::try_from(MASTER_TIMEOUT_MS).unwrap() + offset_ms;
        std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap()));
        let killed = nodes.kill_leader();
        let (s, _) = wait_set(&nodes, &set, Duration::from_secs(15), "one new master", |s| s.master != Some(0));
        assert_eq!((s.master, s.epoch), (Some(2), 2), "round {round} (kill at timeout {offset_ms:+} ms): {s:?}");
        // Nothing more happens: the new master keeps beating, no second election.
        std::thread::sleep(Duration::from_millis(MASTER_TIMEOUT_MS + 500));
        let (s, _) = wait_set(&nodes, &set, Duration::from_secs(5), "still one master", |_| true);
        assert_eq!((s.master, s.epoch), (Some(2), 2), "round {round}: {s:?}");
        for b in [b1, b2] {
            b.alive.store(false, Ordering::SeqCst);
        }
        nodes.restart(killed, files.clone());
    }
}

/// The settings of broker `id` of `set` under the controller `nodes` (on a port of its own, with
/// the nodes' certificate), and `extra`.
fn broker_env(nodes: &Nodes, set: &str, id: u32, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let (cert, key, ca) = nodes.tls_files();
    let mut env: Vec<(String, String)> = vec![
        ("WASMQ_CONTROLLER".into(), nodes.list()),
        ("WASMQ_BROKER_NAME".into(), set.into()),
        ("WASMQ_BROKER_ID".into(), id.to_string()),
        ("WASMQ_LISTEN".into(), free_addr()),
        ("WASMQ_TLS_CERT".into(), cert.display().to_string()),
        ("WASMQ_TLS_KEY".into(), key.display().to_string()),
        ("WASMQ_PEER_CA".into(), ca.display().to_string()),
        ("WASMQ_ADMIN_TOKEN".into(), "failover-test-token-0123".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Drains `topic` (`queues` queues) from `broker`: every message body.
fn bodies(rt: &tokio::runtime::Runtime, broker: &Broker, topic: &str, queues: u32) -> BTreeSet<String> {
    rt.block_on(async {
        let conn = broker.connect().await;
        wasmq_tests::drain(&conn, topic, queues).await.iter().map(|(_, m)| String::from_utf8_lossy(&m.message.body).into_owned()).collect()
    })
}

/// [`bodies`], or `None` while the broker does not take connections (restarting for a new
/// role).
fn bodies_when_up(rt: &tokio::runtime::Runtime, broker: &Broker, topic: &str, queues: u32) -> Option<BTreeSet<String>> {
    let up = rt.block_on(wasmq_client::Connection::connect(broker.options())).is_ok();
    up.then(|| bodies(rt, broker, topic, queues))
}

/// A broker set of three real brokers under three controller nodes. The first broker to start
/// is master in epoch 1, the others follow it. Both slaves are paused (SIGSTOP) while the master
/// takes five more messages, and the master is killed (SIGKILL): a slave gets at most the first
/// of them (a fetch already answered when it was paused). Once the slaves run again the
/// controller elects one of them in epoch 2, which takes writes — the time from the kill is
/// printed — and the other follows it. The old master, started again, learns it is a slave now,
/// finds from the epochs that its log parted from the new master's where epoch 2 began, cuts
/// what the new master never had (at least four messages) and follows: afterwards all three
/// hold the same messages, and the old master refuses writes.
#[test]
fn a_killed_master_is_replaced_and_comes_back_as_a_slave_without_its_lost_tail() {
    const TOPIC: &str = "fo";
    let nodes = Nodes::start();
    let rt = wasmq_tests::runtime();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let env = |id: u32| broker_env(&nodes, "fo-set", id, &[]);
    let start = |id: u32, env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Broker::start(dirs[id as usize].path(), &env)
    };
    let env0 = env(0);
    let b0 = start(0, &env0);
    wait_set(&nodes, "fo-set", Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0) && s.epoch == 1);
    let (b1, b2) = (start(1, &env(1)), start(2, &env(2)));
    b0.cli(&["topic", "create", TOPIC, "--queues", "2"]);
    for i in 0..20 {
        b0.cli(&["send", TOPIC, &format!("before-{i}")]);
    }
    // Both slaves catch up and are reported in sync.
    let started = Instant::now();
    loop {
        let s = nodes.status();
        let set = &s["sets"]["fo-set"];
        let ends: Vec<u64> = (0..3).filter_map(|id: u32| set["heard"][id.to_string()]["log_end"].as_u64()).collect();
        // The slaves take the master's topics every second, apart from its log.
        let know = |b: &Broker| b.cli_command(&["topic", "describe", TOPIC]).output().unwrap().status.success();
        if set["set"]["in_sync"].as_array().is_some_and(|a| a.len() == 3)
            && ends.len() == 3
            && ends.iter().all(|e| *e == ends[0])
            && know(&b1)
            && know(&b2)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the slaves did not catch up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(bodies(&rt, &b1, TOPIC, 2).len(), 20, "slave 1 holds what the master took");

    // The master takes five more while its slaves are paused, and dies before they see them.
    b1.signal(libc::SIGSTOP);
    b2.signal(libc::SIGSTOP);
    for i in 0..5 {
        b0.cli(&["send", TOPIC, &format!("lost-{i}")]);
    }
    let (b0_listen, b0_admin) = (b0.listen.clone(), b0.admin_listen.clone());
    b0.kill();
    let killed_at = Instant::now();
    b1.signal(libc::SIGCONT);
    b2.signal(libc::SIGCONT);
    let (set, _) = wait_set(&nodes, "fo-set", Duration::from_secs(20), "a new master", |s| s.epoch == 2);
    let (master, other) = match set.master {
        Some(1) => (&b1, &b2),
        Some(2) => (&b2, &b1),
        m => panic!("master {m:?} in epoch 2: {set:?}"),
    };
    // Writes resume on the new master.
    let resumed = loop {
        if master.cli_command(&["send", TOPIC, "after-0"]).output().unwrap().status.success() {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "the new master never took writes");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("master killed → writes taken by the new master after {} ms (master timeout {MASTER_TIMEOUT_MS} ms)", resumed.as_millis());
    for i in 1..10 {
        master.cli(&["send", TOPIC, &format!("after-{i}")]);
    }
    // The old master comes back: a slave of broker 1, its five lost messages cut.
    let b0 = Broker::start_again(dirs[0].path(), &env0, &b0_listen, &b0_admin);
    let on_master = bodies(&rt, master, TOPIC, 2);
    let kept: BTreeSet<String> = on_master.iter().filter(|b| b.starts_with("lost-")).cloned().collect();
    assert!(kept.iter().all(|b| b == "lost-0"), "a paused slave got only what was on its way: {kept:?}");
    let expected: BTreeSet<String> =
        (0..20).map(|i| format!("before-{i}")).chain((0..10).map(|i| format!("after-{i}"))).chain(kept.iter().cloned()).collect();
    assert_eq!(on_master, expected, "the new master holds everything from before, what it took, nothing else");
    let started = Instant::now();
    loop {
        let (on0, on_other) = (bodies_when_up(&rt, &b0, TOPIC, 2), bodies_when_up(&rt, other, TOPIC, 2));
        if on0.as_ref() == Some(&expected) && on_other.as_ref() == Some(&expected) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not the same messages everywhere: old master {on0:?}, other slave {on_other:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the old master cut {} message(s) the new master never had", 5 - kept.len());
    let sent = b0.cli_command(&["send", TOPIC, "to-the-old-master"]).output().unwrap();
    assert!(!sent.status.success(), "the old master is a slave now");
    let (after, _) = wait_set(&nodes, "fo-set", Duration::from_secs(10), "0 back in sync", |s| s.in_sync.len() == 3);
    assert_eq!((after.master, after.epoch), (set.master, 2));
    // The admin API (the console's source) shows the same through any broker of the set.
    let view = rt.block_on(b0.admin().controller()).expect("the controller through the admin API");
    assert_eq!((view.leader.is_some(), view.error.as_deref(), view.nodes.len()), (true, None, 3), "{view:?}");
    assert_eq!(view.nodes.iter().filter(|n| n.role == "leader").count(), 1, "{view:?}");
    let s = view.sets.iter().find(|s| s.broker_name == "fo-set").expect("the set in the admin view");
    assert_eq!((s.master, s.epoch, s.in_sync.len()), (set.master, 2, 3), "{s:?}");
    let roles: Vec<(u32, &str, bool)> = s.members.iter().map(|m| (m.broker_id, m.role.as_str(), m.in_sync)).collect();
    let master = set.master.unwrap();
    assert_eq!(roles, (0..3).map(|id| (id, if id == master { "master" } else { "slave" }, true)).collect::<Vec<_>>());
}

/// What the test's producer saw.
#[derive(Default)]
struct Produced {
    acks: Vec<wasmq_tests::checker::Ack>,
    /// For each acknowledgement: when its message was first sent, when it was acknowledged.
    acked_at: Vec<(Instant, Instant)>,
    /// Stored but answered with another status than Ok (not acknowledged).
    not_acked: usize,
    failed: usize,
}

/// How many ordering keys the producer spreads its messages over.
const KEYS: u64 = 8;

/// Message `m-N`'s ordering key and its place among the key's sends.
fn key_of(n: u64) -> (String, u64) {
    (format!("k{}", n % KEYS), n / KEYS)
}

/// Sends `m-0`, `m-1`, … with ordering keys ([`key_of`]) through a `ClusterProducer` (routes
/// from the name servers, which follow the master the controller elects) until `stop`,
/// recording each acknowledgement (status Ok) with its queue and offset; a failed send is sent
/// again.
async fn produce(cluster: Arc<wasmq_client::Cluster>, topic: &'static str, stop: Arc<AtomicBool>, out: Arc<std::sync::Mutex<Produced>>) {
    let producer = wasmq_client::ClusterProducer::new(cluster, "failover-producer");
    let mut n = 0u64;
    let mut first_sent = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let id = format!("m-{n}");
        let key = key_of(n);
        match producer.send(topic, wasmq_client::OutgoingMessage::new(id.clone()).with_ordering_key(key.0.clone())).await {
            Ok(r) => {
                let mut o = out.lock().unwrap();
                if r.receipt.status == wasmq_client::SendStatus::Ok {
                    o.acks.push(wasmq_tests::checker::Ack {
                        id,
                        queue: r.receipt.queue_id,
                        offset: r.receipt.queue_offset,
                        key: Some(key),
                    });
                    o.acked_at.push((first_sent, Instant::now()));
                } else {
                    o.not_acked += 1;
                }
                n += 1;
                first_sent = Instant::now();
            }
            Err(_) => {
                out.lock().unwrap().failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An orderly consumer's deliveries: (message id, key, send number), in the order it got them.
type Deliveries = Arc<std::sync::Mutex<Vec<(String, String, u64)>>>;

/// An orderly member of group `failover-orderly` on `topic` across the cluster (on the master
/// the routes name, following it through failovers): every delivery as (message id, key, send
/// number), in the order the handler saw them.
fn consume_orderly(
    rt: &tokio::runtime::Runtime,
    cluster: Arc<wasmq_client::Cluster>,
    topic: &str,
) -> (wasmq_client::ClusterConsumer, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let seen = Arc::clone(&deliveries);
    let handler: wasmq_client::Handler = Arc::new(move |_, _, m| {
        let id = String::from_utf8_lossy(&m.message.body).into_owned();
        let n: u64 = id.strip_prefix("m-").and_then(|n| n.parse().ok()).expect("a producer's message");
        let (key, k) = key_of(n);
        seen.lock().unwrap().push((id, key, k));
        wasmq_client::ConsumeResult::Success
    });
    let mut options = wasmq_client::GroupOptions::new("failover-orderly", topic);
    options.orderly = true;
    options.heartbeat_interval = Duration::from_millis(500);
    options.pull_wait = Duration::from_millis(500);
    let consumer = rt.block_on(wasmq_client::ClusterConsumer::start(cluster, options, handler)).expect("start the orderly consumer");
    (consumer, deliveries)
}

/// Waits (up to 30 s) until the orderly consumer got every acknowledged message, then checks
/// its deliveries ([`wasmq_tests::checker::check_consumed`]).
fn consumed(
    acks: &[wasmq_tests::checker::Ack],
    deliveries: &std::sync::Mutex<Vec<(String, String, u64)>>,
) -> wasmq_tests::checker::Consumed {
    let started = Instant::now();
    loop {
        let report = wasmq_tests::checker::check_consumed(acks, &deliveries.lock().unwrap());
        if report.missed.is_empty() || started.elapsed() > Duration::from_secs(30) {
            return report;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Synchronous replication under the controller, a producer sending all along through the
/// name server's routes: the master is killed (SIGKILL) `WASMQ_FAILOVER_CYCLES` times (default
/// 10), each time started again to rejoin as a slave, then paused (SIGSTOP) half as many times
/// until another is elected, and continued (SIGCONT) to find itself replaced and rejoin. Every
/// acknowledged message is read back from the final master at the queue and offset it was
/// acknowledged with, no offset holds two messages (the checker); the write-unavailability
/// window of each failover (kill or pause → next acknowledgement) is printed.
#[test]
fn under_sync_replication_killed_masters_lose_no_acknowledged_message() {
    const SET: &str = "sync-set";
    const TOPIC: &str = "acked";
    let kills: usize = std::env::var("WASMQ_FAILOVER_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    // Half as many pauses as kills (the 10 and 5 by default).
    let pauses = kills / 2;
    let nodes = Nodes::start();
    let rt = wasmq_tests::runtime();
    let (cert, key, ca) = nodes.tls_files();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = wasmq_tests::broker::Namesrv::start(dirs[3].path(), Some((&cert, &key, &ca)), 3_000);
    let extra = [
        ("WASMQ_REPLICATION", "sync"),
        ("WASMQ_REPLICA_TIMEOUT_MS", "1000"),
        ("WASMQ_NAMESRV", ns.listen.as_str()),
        ("WASMQ_REGISTER_INTERVAL_MS", "300"),
    ];
    let envs: Vec<Vec<(String, String)>> = (0..3u32).map(|id| broker_env(&nodes, SET, id, &extra)).collect();
    let start = |id: usize| {
        let env: Vec<(&str, &str)> = envs[id].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Broker::start(dirs[id].path(), &env)
    };
    let mut brokers: Vec<Option<Broker>> = vec![Some(start(0))];
    wait_set(&nodes, SET, Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0));
    brokers.push(Some(start(1)));
    brokers.push(Some(start(2)));
    brokers[0].as_ref().unwrap().cli(&["topic", "create", TOPIC, "--queues", "2"]);
    wait_set(&nodes, SET, Duration::from_secs(20), "all in sync", |s| s.in_sync.len() == 3);

    let (stop, out) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(Produced::default())));
    let cluster = wasmq_client::Cluster::new(vec![ns.listen.clone()], ca.clone());
    let producer = rt.spawn(produce(cluster, TOPIC, Arc::clone(&stop), Arc::clone(&out)));
    let (consumer, deliveries) = consume_orderly(&rt, wasmq_client::Cluster::new(vec![ns.listen.clone()], ca.clone()), TOPIC);
    let (mut kill_windows, mut pause_windows) = (Vec::new(), Vec::new());
    for cycle in 0..kills + pauses {
        let pause = cycle >= kills;
        std::thread::sleep(Duration::from_millis(1000));
        let (before, _) = wait_set(&nodes, SET, Duration::from_secs(5), "a master", |s| s.master.is_some());
        let m = before.master.unwrap() as usize;
        let stopped_at = Instant::now();
        let restart = if pause {
            // SIGSTOP: hung, not dead; it comes back after a new master was elected.
            brokers[m].as_ref().unwrap().signal(libc::SIGSTOP);
            None
        } else {
            let b = brokers[m].take().unwrap();
            let addrs = (b.listen.clone(), b.admin_listen.clone());
            b.kill();
            Some(addrs)
        };
        wait_set(&nodes, SET, Duration::from_secs(20), "a new master", |s| s.epoch > before.epoch);
        // Unavailable from the stop until a message sent after it is acknowledged (an answer
        // already on its way when the master stopped does not count).
        let resumed = loop {
            if let Some((_, at)) = out.lock().unwrap().acked_at.iter().find(|(sent, _)| *sent > stopped_at) {
                break *at - stopped_at;
            }
            assert!(stopped_at.elapsed() < Duration::from_secs(20), "cycle {cycle}: no acknowledgement after the master stopped");
            std::thread::sleep(Duration::from_millis(20));
        };
        match restart {
            Some((listen, admin)) => {
                kill_windows.push(resumed);
                brokers[m] = Some(Broker::start_again(dirs[m].path(), &envs[m], &listen, &admin));
            }
            None => {
                pause_windows.push(resumed);
                brokers[m].as_ref().unwrap().signal(libc::SIGCONT);
            }
        }
        wait_set(&nodes, SET, Duration::from_secs(30), "the old master back in sync", |s| s.in_sync.len() == 3);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(producer).unwrap();

    let (last, _) = wait_set(&nodes, SET, Duration::from_secs(5), "a master", |s| s.master.is_some());
    let master = brokers[last.master.unwrap() as usize].as_ref().unwrap();
    let o = out.lock().unwrap();
    let report = wasmq_tests::checker::check(&o.acks, &reads(&rt, master, TOPIC, 2), true);
    let consumed = consumed(&o.acks, &deliveries);
    drop(consumer);
    eprintln!(
        "{kills} master kills and {pauses} pauses under sync replication: {report}; {} stored without acknowledgement, {} failed sends; \
         writes resumed after (ms): kills {}, pauses {}; orderly consumer: {consumed}",
        o.not_acked,
        o.failed,
        median_max(&mut kill_windows),
        median_max(&mut pause_windows)
    );
    assert!(o.acks.len() > 100, "the producer got too few acknowledgements to mean anything: {}", o.acks.len());
    assert!(
        report.lost.is_empty() && report.moved.is_empty() && report.conflicting.is_empty() && report.out_of_order.is_empty(),
        "{report}"
    );
    assert!(consumed.missed.is_empty() && consumed.out_of_order.is_empty(), "orderly consumer: {consumed}; missed {:?}", consumed.missed);
}

/// The queue offsets and bodies of every message of `topic` (`queues` queues) on `broker`.
fn reads(rt: &tokio::runtime::Runtime, broker: &Broker, topic: &str, queues: u32) -> Vec<wasmq_tests::checker::Seen> {
    rt.block_on(async {
        let conn = broker.connect().await;
        wasmq_tests::drain(&conn, topic, queues)
            .await
            .into_iter()
            .map(|(queue, m)| wasmq_tests::checker::Seen {
                queue,
                offset: m.queue_offset,
                id: String::from_utf8_lossy(&m.message.body).into_owned(),
            })
            .collect()
    })
}

/// The median and the largest of `w`.
fn median_max(w: &mut [Duration]) -> String {
    w.sort();
    match w.last() {
        Some(max) => format!("median {} max {}", w[w.len() / 2].as_millis(), max.as_millis()),
        None => "-".into(),
    }
}

/// Sends `direct-CYCLE-0`, `direct-CYCLE-1`, … to `topic` on `conn` (one broker, no retries)
/// every 100 ms from `go` until `stop`: each body with its answer (a status, or an error).
async fn send_direct(
    conn: wasmq_client::Connection,
    topic: &'static str,
    cycle: usize,
    go: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, Result<wasmq_client::SendStatus, String>)> {
    let p = wasmq_client::Producer::new(conn, "direct").with_retries(0);
    go.notified().await;
    let mut answers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let body = format!("direct-{cycle}-{}", answers.len());
        let answer = p.send(topic, wasmq_client::OutgoingMessage::new(body.clone())).await;
        answers.push((body, answer.map(|r| r.status).map_err(|e| e.to_string())));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answers
}

/// Network partitions in namespaces this test makes (`ip netns`, veth links to a bridge in the
/// test's namespace): the three controller nodes on one side, each broker of a synchronously
/// replicated set on a side of its own (bound to every interface there, published at its
/// address by `advertise_host`), the name server and the test in the test's namespace.
/// Each cycle cuts the master off from the controller and both slaves — not from the test,
/// whose producer follows the name server's routes and whose own connection keeps sending to
/// the cut-off master (to a topic of its own). Cut off, the master acknowledges nothing (its
/// lease runs out, its synchronous sends time out); the others elect a new master, which takes
/// the producer's writes. Healed, the old master learns its epoch is stale, cuts what it stored
/// unacknowledged and rejoins in sync. `WASMQ_FAILOVER_CYCLES / 2` cycles (at least 2); in the
/// end no acknowledged message is lost, moved or shares an offset (the checker). Skipped,
/// saying why, where namespaces cannot be made (not root, no iproute2).
#[test]
fn masters_partitioned_from_controller_and_slaves_stop_acking_and_are_replaced() {
    const SET: &str = "part-set";
    const TOPIC: &str = "parted";
    const DIRECT: &str = "direct";
    let cycles = (std::env::var("WASMQ_FAILOVER_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10) / 2).max(2);
    // Side 0: the controller nodes; side 1 + i: broker i.
    let lab = match Lab::new(4) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: the partition test needs network namespaces (root and iproute2): {why}");
            return;
        }
    };
    let side = |id: usize| Side(1 + id);
    let tmp = tempfile::tempdir().unwrap();
    let files = lab.certificates(tmp.path());
    let nodes = Nodes::start_in(&lab, Side(0), files.clone());
    let rt = wasmq_tests::runtime();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = wasmq_tests::broker::Namesrv::start_on(
        &format!("{}:0", lab.host_ip()),
        dirs[3].path(),
        Some((&files.0, &files.1, &files.2)),
        3_000,
    );
    let extra = [
        ("WASMQ_REPLICATION", "sync"),
        ("WASMQ_REPLICA_TIMEOUT_MS", "1000"),
        ("WASMQ_NAMESRV", ns.listen.as_str()),
        ("WASMQ_REGISTER_INTERVAL_MS", "300"),
    ];
    let envs: Vec<Vec<(String, String)>> = (0..3)
        .map(|id: usize| {
            let mut env = broker_env(&nodes, SET, id as u32, &extra);
            env.retain(|(k, _)| k != "WASMQ_LISTEN");
            // Bound to every interface of its namespace, published at its address.
            for (k, port) in [("WASMQ_LISTEN", 7200), ("WASMQ_ADMIN_LISTEN", 7201), ("WASMQ_GRPC_LISTEN", 7202)] {
                env.push((k.into(), format!("0.0.0.0:{port}")));
            }
            env.push(("WASMQ_ADVERTISE_HOST".into(), side(id).ip()));
            env
        })
        .collect();
    let start = |id: usize| {
        let mut b = Broker::start_in(&lab, side(id), dirs[id].path(), &envs[id]);
        (b.listen, b.admin_listen, b.grpc_listen) =
            (format!("{}:7200", side(id).ip()), format!("{}:7201", side(id).ip()), format!("{}:7202", side(id).ip()));
        b
    };
    let mut brokers = vec![start(0)];
    wait_set(&nodes, SET, Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0));
    brokers.push(start(1));
    brokers.push(start(2));
    brokers[0].cli(&["topic", "create", TOPIC, "--queues", "2"]);
    brokers[0].cli(&["topic", "create", DIRECT, "--queues", "1"]);
    let (all, _) = wait_set(&nodes, SET, Duration::from_secs(20), "all in sync", |s| s.in_sync.len() == 3);
    let published: Vec<&String> = all.members.values().collect();
    assert_eq!(published, (0..3).map(|id| format!("{}:7200", side(id).ip())).collect::<Vec<_>>().iter().collect::<Vec<_>>(), "advertised");

    let (stop, out) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(Produced::default())));
    let cluster = wasmq_client::Cluster::new(vec![ns.listen.clone()], files.2.clone());
    let producer = rt.spawn(produce(cluster, TOPIC, Arc::clone(&stop), Arc::clone(&out)));
    let (consumer, deliveries) = consume_orderly(&rt, wasmq_client::Cluster::new(vec![ns.listen.clone()], files.2.clone()), TOPIC);
    let (mut elected, mut resumed, mut rejoined) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_sent, mut direct_refused, mut direct_stored) = (0, 0, 0);
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(1000));
        let (before, _) = wait_set(&nodes, SET, Duration::from_secs(5), "a master", |s| s.master.is_some());
        let m = before.master.unwrap() as usize;
        // The test's own connection to the master, made before the cut.
        let (go, direct_stop) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicBool::new(false)));
        let conn = rt.block_on(brokers[m].connect());
        let direct = rt.spawn(send_direct(conn, DIRECT, cycle, Arc::clone(&go), Arc::clone(&direct_stop)));

        lab.isolate(side(m)).expect("cut the master off");
        let cut_at = Instant::now();
        go.notify_one();
        assert!(!lab.reaches(side(m), &nodes.addrs[0].1, Duration::from_millis(300)), "the cut-off master still reaches a controller node");
        let (after, _) = wait_set(&nodes, SET, Duration::from_secs(20), "a master on the other side", |s| s.epoch > before.epoch);
        elected.push(cut_at.elapsed());
        assert_ne!(after.master, Some(m as u32), "the cut-off master was elected again: {after:?}");
        resumed.push(loop {
            if let Some((_, at)) = out.lock().unwrap().acked_at.iter().find(|(sent, _)| *sent > cut_at) {
                break *at - cut_at;
            }
            assert!(cut_at.elapsed() < Duration::from_secs(20), "cycle {cycle}: no acknowledgement after the cut");
            std::thread::sleep(Duration::from_millis(20));
        });
        // Writes go on on the other side for a while; the cut-off master keeps being asked.
        std::thread::sleep(Duration::from_secs(1));
        direct_stop.store(true, Ordering::SeqCst);
        let answers = rt.block_on(direct).unwrap();
        let acked: Vec<&String> = answers.iter().filter(|(_, a)| *a == Ok(wasmq_client::SendStatus::Ok)).map(|(b, _)| b).collect();
        assert!(acked.is_empty(), "cycle {cycle}: the cut-off master acknowledged {acked:?}");
        let stored = bodies(&rt, &brokers[m], DIRECT, 1).iter().filter(|b| b.starts_with(&format!("direct-{cycle}-"))).count();
        direct_sent += answers.len();
        direct_refused += answers.iter().filter(|(_, a)| a.is_err()).count();
        direct_stored += stored;

        lab.rejoin(side(m)).expect("heal the partition");
        let healed_at = Instant::now();
        wait_set(&nodes, SET, Duration::from_secs(30), "the old master back in sync", |s| s.in_sync.len() == 3 && s.epoch == after.epoch);
        rejoined.push(healed_at.elapsed());
        // What it stored cut off is gone.
        let started = Instant::now();
        loop {
            let kept = bodies_when_up(&rt, &brokers[m], DIRECT, 1).map(|b| b.iter().any(|b| b.starts_with(&format!("direct-{cycle}-"))));
            if kept == Some(false) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "cycle {cycle}: the old master kept sends it never acknowledged");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(producer).unwrap();

    let (last, _) = wait_set(&nodes, SET, Duration::from_secs(5), "a master", |s| s.master.is_some());
    let master = &brokers[last.master.unwrap() as usize];
    let o = out.lock().unwrap();
    let report = wasmq_tests::checker::check(&o.acks, &reads(&rt, master, TOPIC, 2), true);
    let consumed = consumed(&o.acks, &deliveries);
    drop(consumer);
    eprintln!(
        "{cycles} partitions under sync replication: {report}; orderly consumer: {consumed}; the cut-off masters answered {direct_sent} direct sends: 0 acknowledged, \
         {direct_refused} refused, {direct_stored} stored (then cut); new master elected after the cut (ms): {}; \
         producer acknowledged again (ms): {}; old master back in sync after healing (ms): {} (master timeout {MASTER_TIMEOUT_MS} ms)",
        median_max(&mut elected),
        median_max(&mut resumed),
        median_max(&mut rejoined),
    );
    assert!(direct_sent >= 10 * cycles, "too few sends to the cut-off masters to mean anything: {direct_sent}");
    assert!(direct_stored > 0, "no cut-off master stored a send (nothing to cut)");
    assert!(direct_refused > 0, "no cut-off master refused a send once its lease ran out");
    assert!(o.acks.len() > 100, "the producer got too few acknowledgements to mean anything: {}", o.acks.len());
    assert!(
        report.lost.is_empty() && report.moved.is_empty() && report.conflicting.is_empty() && report.out_of_order.is_empty(),
        "{report}"
    );
    assert!(consumed.missed.is_empty() && consumed.out_of_order.is_empty(), "orderly consumer: {consumed}; missed {:?}", consumed.missed);
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Bodies of `topic` on `broker` with how often each is stored.
fn counted(rt: &tokio::runtime::Runtime, broker: &Broker, topic: &str, queues: u32) -> std::collections::BTreeMap<String, usize> {
    let mut n = std::collections::BTreeMap::new();
    for s in reads(rt, broker, topic, queues) {
        *n.entry(s.id).or_insert(0) += 1;
    }
    n
}

/// Waits (up to 20 s) until `broker` acknowledges a send to the topic `probe`.
fn wait_for_writes(broker: &Broker) {
    let started = Instant::now();
    while !broker.cli_command(&["send", "probe", "ready"]).output().unwrap().status.success() {
        assert!(started.elapsed() < Duration::from_secs(20), "{} never took writes", broker.listen);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the broker set holds besides plain messages continues on the new master after the
/// master is killed (SIGKILL), under synchronous replication: undecided transactions are
/// checked back by the new master and settled once (with those ended before the kill, each
/// committed message visible once, no rolled-back one); scheduled messages stored before the
/// kill are delivered by the new master when due — never early, each once; a consumer group's
/// committed offsets (exchanged with the slaves every second) are where the group resumes.
#[test]
fn transactions_scheduled_messages_and_group_offsets_continue_on_the_new_master() {
    const SET: &str = "state-set";
    const N_TX: usize = 20;
    const N_LATER: usize = 20;
    const DELAY_MS: u64 = 5_000;
    // Its sends must each be acknowledged: a lease long enough that a loaded machine's slow
    // heartbeat does not fence the master for a moment.
    let nodes = Nodes::start_with(5_000);
    let rt = wasmq_tests::runtime();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let extra = [("WASMQ_REPLICATION", "sync"), ("WASMQ_REPLICA_TIMEOUT_MS", "2000"), ("WASMQ_TRANSACTION_CHECK_INTERVAL_MS", "1000")];
    let envs: Vec<Vec<(String, String)>> = (0..3u32).map(|id| broker_env(&nodes, SET, id, &extra)).collect();
    let start = |id: usize| {
        let env: Vec<(&str, &str)> = envs[id].iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Broker::start(dirs[id].path(), &env)
    };
    let b0 = start(0);
    wait_set(&nodes, SET, Duration::from_secs(15), "broker 0 master", |s| s.master == Some(0));
    let slaves = [start(1), start(2)];
    for topic in ["pay", "later", "plain", "probe"] {
        b0.cli(&["topic", "create", topic, "--queues", "2"]);
    }
    wait_set(&nodes, SET, Duration::from_secs(20), "all in sync", |s| s.in_sync.len() == 3);
    wait_for_writes(&b0);
    // The slaves take the master's topics every second.
    let started = Instant::now();
    while !slaves.iter().all(|b| b.cli_command(&["topic", "describe", "plain"]).output().unwrap().status.success()) {
        assert!(started.elapsed() < Duration::from_secs(10), "the slaves never learned the topics");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Even transactions commit, odd ones roll back — whoever decides.
    let decide = |body: &str| {
        let i: usize = body.trim_start_matches("tx-").parse().expect("a test transaction");
        if i.is_multiple_of(2) { wasmq_client::TxDecision::Commit } else { wasmq_client::TxDecision::Rollback }
    };
    let later_sent_ms = rt.block_on(async {
        // Transactions: the first half ended by the producer, the rest left undecided (the
        // local transaction says unknown, and the producer is gone before any check-back).
        let tx = wasmq_client::TransactionProducer::start(b0.connect().await, "payments", |_: &wasmq_client::TransactionCheck| {
            wasmq_client::TxDecision::Unknown
        })
        .await
        .unwrap()
        .with_check_after_ms(2_000);
        for i in 0..N_TX {
            let body = format!("tx-{i}");
            let local = if i < N_TX / 2 { decide(&body) } else { wasmq_client::TxDecision::Unknown };
            let t = tx.send("pay", wasmq_client::OutgoingMessage::new(body), |_| local).await.unwrap();
            assert_eq!(t.receipt.status, wasmq_client::SendStatus::Ok, "half message {i} acknowledged by the in-sync set");
        }
        drop(tx);
        // Scheduled messages, due DELAY_MS from now.
        let p = wasmq_client::Producer::new(b0.connect().await, "reminders");
        let sent_ms = now_ms();
        for i in 0..N_LATER {
            let r =
                p.send("later", wasmq_client::OutgoingMessage::new(format!("later-{i}")).with_delay(Duration::from_millis(DELAY_MS))).await;
            assert_eq!(r.unwrap().status, wasmq_client::SendStatus::Ok);
        }
        // A consumer group takes the first 50 plain messages, commits, and leaves.
        for i in 0..100 {
            assert_eq!(
                p.send("plain", wasmq_client::OutgoingMessage::new(format!("plain-{i}"))).await.unwrap().status,
                wasmq_client::SendStatus::Ok
            );
        }
        sent_ms
    });
    let first = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = Arc::clone(&first);
    let handler: wasmq_client::Handler = Arc::new(move |_, _, m| {
        let mut got = got.lock().unwrap();
        if got.len() >= 50 {
            return wasmq_client::ConsumeResult::Release;
        }
        got.push(String::from_utf8_lossy(&m.message.body).into_owned());
        wasmq_client::ConsumeResult::Success
    });
    let mut options = wasmq_client::GroupOptions::new("readers", "plain");
    options.batch = 10;
    rt.block_on(async {
        let member = wasmq_client::GroupConsumer::start(b0.connect().await, options.clone(), handler).await.unwrap();
        let started = Instant::now();
        while first.lock().unwrap().len() < 50 {
            assert!(started.elapsed() < Duration::from_secs(20), "the group got {} of 50", first.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        member.shutdown().await;
    });
    let committed = |b: &Broker| -> u64 {
        rt.block_on(b.admin().describe_group("readers")).map(|g| g.queues.iter().filter_map(|q| q.committed).sum()).unwrap_or(0)
    };
    assert_eq!(committed(&b0), 50, "the group committed what it consumed");
    // Offsets reach the slaves with the every-second exchange.
    let started = Instant::now();
    while !slaves.iter().all(|b| committed(b) == 50) {
        assert!(started.elapsed() < Duration::from_secs(10), "the slaves never took the group's offsets");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pending_before: u64 = rt.block_on(b0.admin().transactions()).unwrap().pending.iter().map(|p| p.pending).sum();
    assert_eq!(pending_before, (N_TX / 2) as u64, "half of the transactions undecided at the kill");
    assert!(now_ms() < later_sent_ms + DELAY_MS - 1_000, "the kill comes well before the scheduled messages are due");

    b0.kill();
    let (set, _) = wait_set(&nodes, SET, Duration::from_secs(20), "a new master", |s| s.epoch == 2);
    let master = &slaves[set.master.expect("a master") as usize - 1];
    // Elected, it restarts its services as master.
    wait_for_writes(master);

    // A producer of the group on the new master answers its check-backs.
    let checks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&checks);
    let _checker = rt.block_on(async {
        wasmq_client::TransactionProducer::start(master.connect().await, "payments", move |c: &wasmq_client::TransactionCheck| {
            let body = String::from_utf8_lossy(&c.message.body).into_owned();
            seen.lock().unwrap().push(body.clone());
            decide(&body)
        })
        .await
        .unwrap()
    });
    let started = Instant::now();
    loop {
        let t = rt.block_on(master.admin().transactions()).unwrap();
        if t.pending.iter().map(|p| p.pending).sum::<u64>() == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "transactions still undecided on the new master: {t:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pay = counted(&rt, master, "pay", 2);
    let want: BTreeSet<String> = (0..N_TX).filter(|i| i % 2 == 0).map(|i| format!("tx-{i}")).collect();
    assert_eq!(pay.keys().cloned().collect::<BTreeSet<_>>(), want, "exactly the committed transactions are visible");
    assert!(pay.values().all(|n| *n == 1), "each committed once: {pay:?}");
    let checked: BTreeSet<String> = checks.lock().unwrap().iter().cloned().collect();
    let undecided: BTreeSet<String> = (N_TX / 2..N_TX).map(|i| format!("tx-{i}")).collect();
    assert_eq!(checked, undecided, "the new master checked back exactly the undecided ones");

    // The scheduled messages arrive when due, once.
    let started = Instant::now();
    let later = loop {
        let later = counted(&rt, master, "later", 2);
        if later.len() == N_LATER {
            break later;
        }
        assert!(now_ms() >= later_sent_ms + DELAY_MS || later.is_empty(), "scheduled messages delivered early: {later:?}");
        assert!(started.elapsed() < Duration::from_secs(30), "{} of {N_LATER} scheduled messages delivered", later.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    let due_after_ms = now_ms().saturating_sub(later_sent_ms + DELAY_MS);
    assert!(later.values().all(|n| *n == 1), "each scheduled message delivered once: {later:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counted(&rt, master, "later", 2), later, "no scheduled message delivered again");

    // The group resumes at its committed offsets: the other 50, none of the first again.
    let rest = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = Arc::clone(&rest);
    let handler: wasmq_client::Handler = Arc::new(move |_, _, m| {
        got.lock().unwrap().push(String::from_utf8_lossy(&m.message.body).into_owned());
        wasmq_client::ConsumeResult::Success
    });
    rt.block_on(async {
        let member = wasmq_client::GroupConsumer::start(master.connect().await, options, handler).await.unwrap();
        let started = Instant::now();
        while rest.lock().unwrap().len() < 50 {
            assert!(started.elapsed() < Duration::from_secs(20), "the group got {} of the other 50", rest.lock().unwrap().len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        member.shutdown().await;
    });
    let before: BTreeSet<String> = first.lock().unwrap().iter().cloned().collect();
    let after: BTreeSet<String> = rest.lock().unwrap().iter().cloned().collect();
    assert_eq!(rest.lock().unwrap().len(), 50, "no message delivered twice after the failover");
    assert!(before.is_disjoint(&after), "redelivered after the failover: {:?}", before.intersection(&after).collect::<Vec<_>>());
    assert_eq!(before.union(&after).count(), 100, "every message consumed once");
    eprintln!(
        "after the master's kill: {} undecided transactions checked back and settled by the new master, {N_LATER} scheduled messages \
         delivered {due_after_ms} ms after due, the group resumed at offset 50 of 100",
        N_TX / 2
    );
}
