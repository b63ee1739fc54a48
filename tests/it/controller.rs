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
use wasmq_tests::broker::{Controller, cli_binary, dev_tls_files, free_addr};

/// A master silent this long is replaced (short, for the test).
const MASTER_TIMEOUT_MS: u64 = 1_500;
/// How often the test's brokers send heartbeats.
const BEAT: Duration = Duration::from_millis(200);

struct Nodes {
    nodes: Vec<Option<Controller>>,
    addrs: Vec<(u64, String)>,
    ca: std::path::PathBuf,
    dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    /// Three nodes; the first generates the certificate all three use.
    fn start() -> Self {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let addrs: Vec<(u64, String)> = (1..=3).map(|id| (id, free_addr())).collect();
        let first = Controller::start(1, &addrs, dirs[0].path(), None, MASTER_TIMEOUT_MS);
        let (cert, key, ca) = first.tls_files();
        let mut nodes = vec![Some(first)];
        for (i, d) in dirs.iter().enumerate().skip(1) {
            nodes.push(Some(Controller::start(i as u64 + 1, &addrs, d.path(), Some((&cert, &key, &ca)), MASTER_TIMEOUT_MS)));
        }
        Self { nodes, addrs, ca, dirs }
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
        self.nodes[i] = Some(Controller::start(id, &self.addrs, &dir, tls, MASTER_TIMEOUT_MS));
    }

    /// The certificate, key and CA node 1 generated (even while it is down).
    fn tls_files(&self) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        dev_tls_files(self.dirs[0].path(), &self.ca)
    }
}

/// One broker of the test: it sends heartbeats every [`BEAT`] while `alive`, keeps the epoch it
/// is told, and — while the controller names it master — reports `in_sync` (and itself) in sync.
struct FakeBroker {
    alive: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
}

fn fake_broker(rt: &tokio::runtime::Runtime, nodes: &Nodes, set: &str, id: u32, log_end: u64, in_sync: &[u32]) -> FakeBroker {
    let (alive, epoch) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let (a, e, client) = (Arc::clone(&alive), Arc::clone(&epoch), nodes.client());
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
            if let Ok(Answer::Set(s)) = client.call(&Call::Heartbeat(h)).await {
                e.store(s.epoch, Ordering::SeqCst);
                master = s.master == Some(id);
            }
            tokio::time::sleep(BEAT).await;
        }
    });
    FakeBroker { alive, epoch }
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
    assert_eq!((set.master, set.in_sync.iter().copied().collect::<Vec<_>>()), (Some(2), vec![2]), "{set:?}");
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
    // Master 2 reports broker 1 in sync; a switchover to 0 (silent, out of sync) is refused.
    wait_set(&nodes, "a", Duration::from_secs(10), "1 back in sync", |s| s.in_sync.contains(&1));
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
