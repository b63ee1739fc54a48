//! A cluster: two name servers, two broker sets of master + slave, all over TLS; producers and
//! consumer groups across both; name servers stopped; a master killed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_client::{Cluster, ClusterConsumer, ClusterProducer, ConsumeResult, GroupOptions, OutgoingMessage, PulledMessage};
use wasmq_tests::broker::{Broker, Namesrv};

const TOKEN: &str = "cluster-test-token-0123456789";

/// (body, consumer) of everything consumed.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

async fn produce(p: &ClusterProducer, from: usize, n: usize) -> HashMap<String, usize> {
    let mut per_broker: HashMap<String, usize> = HashMap::new();
    for i in from..from + n {
        let r = p.send("orders", OutgoingMessage::new(format!("m-{i}").into_bytes())).await.unwrap_or_else(|e| panic!("message {i}: {e}"));
        *per_broker.entry(r.broker_name).or_default() += 1;
    }
    per_broker
}

async fn wait_all(seen: &Seen, want: &HashSet<String>, limit: Duration) {
    let started = Instant::now();
    loop {
        let got: HashSet<String> = seen.lock().unwrap().iter().map(|(b, _)| b.clone()).collect();
        let missing = want.difference(&got).count();
        if missing == 0 {
            return;
        }
        assert!(started.elapsed() < limit, "{missing} of {} messages not consumed within {limit:?}", want.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn two_broker_sets_with_name_servers_failover_and_slave_reads() {
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns1 = Namesrv::start(dirs[0].path(), None, 3_000);
    let (cert, key, ca) = ns1.tls_files();
    let ns2 = Namesrv::start(dirs[1].path(), Some((&cert, &key, &ca)), 3_000);
    let namesrvs = format!("{},{}", ns1.listen, ns2.listen);
    let (cert_s, key_s, ca_s) = (cert.display().to_string(), key.display().to_string(), ca.display().to_string());
    let common = |name: &'static str| -> Vec<(&str, String)> {
        vec![
            ("WASMQ_TLS_CERT", cert_s.clone()),
            ("WASMQ_TLS_KEY", key_s.clone()),
            ("WASMQ_PEER_CA", ca_s.clone()),
            ("WASMQ_ADMIN_TOKEN", TOKEN.into()),
            ("WASMQ_NAMESRV", namesrvs.clone()),
            ("WASMQ_REGISTER_INTERVAL_MS", "300".into()),
            ("WASMQ_BROKER_NAME", name.into()),
            ("WASMQ_REPLICATION", "sync".into()),
            ("WASMQ_GROUP_SESSION_TIMEOUT_MS", "3000".into()),
            // A consumer more than 20 KB of log behind is sent to the slave, and back.
            ("WASMQ_SLAVE_READ_BEHIND_BYTES", "20000".into()),
        ]
    };
    let start = |dir: &std::path::Path, name: &'static str| {
        let env = common(name);
        Broker::start(dir, &env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
    };
    let master_a = start(dirs[2].path(), "broker-a");
    let master_b = start(dirs[3].path(), "broker-b");
    let slave_a = Broker::start_slave(dirs[4].path(), &master_a, &[]);
    let slave_b = Broker::start_slave(dirs[5].path(), &master_b, &[]);
    for m in [&master_a, &master_b] {
        m.cli(&["topic", "create", "orders", "--queues", "4"]);
    }
    let rt = wasmq_tests::runtime();
    let cluster = Cluster::with_route_refresh(vec![ns1.listen.clone(), ns2.listen.clone()], &ca, Duration::from_millis(500));
    rt.block_on(async {
        // Both broker sets, masters and slaves, reach both name servers.
        let started = Instant::now();
        loop {
            cluster.forget_route("orders");
            let ready =
                cluster.route("orders").await.is_ok_and(|r| r.len() == 2 && r.iter().all(|b| b.master.is_some() && b.slaves.len() == 1));
            if ready {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "routes incomplete: {:?}", cluster.route("orders").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let brokers = cluster.brokers().await.unwrap();
        assert_eq!(brokers.len(), 4, "{brokers:?}");

        // Produce across both broker sets.
        let producer = ClusterProducer::new(Arc::clone(&cluster), "order-service");
        let spread = produce(&producer, 0, 400).await;
        assert!(spread.get("broker-a").is_some_and(|n| *n > 100) && spread.get("broker-b").is_some_and(|n| *n > 100), "{spread:?}");

        // The CLI lists every broker set through the name servers.
        let out = master_b.cli(&["cluster", "status", "--namesrv", &namesrvs]);
        for want in ["broker-a", "broker-b", "master", "slave", "connected"] {
            assert!(out.contains(want), "{want} missing from:\n{out}");
        }
        assert_eq!(out.lines().count(), 5, "a header and four brokers:\n{out}");

        // Every name server down: traffic goes on with the routes the clients know.
        ns1.kill();
        ns2.kill();
        let spread = produce(&producer, 400, 400).await;
        assert_eq!(spread.values().sum::<usize>(), 400);
        assert_eq!(spread.len(), 2, "still both broker sets: {spread:?}");

        // Master A dies: sends fail over to broker set B (A avoided).
        master_a.kill();
        let started = Instant::now();
        let spread = produce(&producer, 800, 400).await;
        println!("after killing master A: 400 sends in {:?}, spread {spread:?}", started.elapsed());
        assert!(spread.get("broker-b").is_some_and(|n| *n >= 399), "failed over to B: {spread:?}");

        // Two group members across both broker sets: A's queues from slave A (its master is
        // down); B's from master B, except while a member reads old data: master B sends it
        // to slave B, which sends it back once it has caught up. Each member gets queues of
        // both broker sets.
        let seen: Seen = Arc::default();
        let mut members = Vec::new();
        for member in 0..2 {
            let s = Arc::clone(&seen);
            let handler: wasmq_client::Handler = Arc::new(move |_t: &str, _q: u32, m: &PulledMessage| {
                s.lock().unwrap().push((String::from_utf8_lossy(&m.message.body).into_owned(), member));
                ConsumeResult::Success
            });
            let mut options = GroupOptions::new("billing", "orders");
            options.heartbeat_interval = Duration::from_millis(500);
            options.pull_wait = Duration::from_millis(300);
            members.push(ClusterConsumer::start(Arc::clone(&cluster), options, handler).await.unwrap());
        }
        let want: HashSet<String> = (0..1200).map(|i| format!("m-{i}")).collect();
        wait_all(&seen, &want, Duration::from_secs(60)).await;
        let seen_now = seen.lock().unwrap().clone();
        let by_member: Vec<usize> = (0..2).map(|m| seen_now.iter().filter(|(_, c)| *c == m).count()).collect();
        let duplicates = seen_now.len() - seen_now.iter().map(|(b, _)| b).collect::<HashSet<_>>().len();
        println!("consumed 1200 messages across both broker sets (A from its slave): per member {by_member:?}, {duplicates} redelivered");
        assert!(by_member.iter().all(|n| *n > 0), "both members consumed: {by_member:?}");
        // Broker set A's queues were read on its slave, by both members.
        let on_slave = slave_a.admin().describe_group("billing").await.unwrap();
        assert_eq!(on_slave.members.len(), 2, "{on_slave:?}");
        assert!(on_slave.queues.iter().any(|q| q.topic == "orders"), "{on_slave:?}");
        // Members look at their brokers' suggestions twice a second.
        let started = Instant::now();
        let placements = loop {
            let placements: Vec<Vec<(String, &str)>> = members.iter().map(ClusterConsumer::placements).collect();
            let there_and_back = placements.iter().any(|p| {
                let b_moves: Vec<&str> = p.iter().filter(|(b, _)| b == "broker-b").map(|(_, w)| *w).collect();
                b_moves.windows(3).any(|w| w == ["master", "slave", "master"])
            });
            if there_and_back {
                break placements;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "a member behind on B went to slave B and came back: {placements:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("placements (broker set, where): {placements:?}");
        for p in &placements {
            assert_eq!(p.iter().find(|(b, _)| b == "broker-a").map(|(_, w)| *w), Some("slave"), "A read on its slave: {p:?}");
        }
        drop(members);
        drop((slave_a, slave_b, master_b));
    });
}

/// With a master SIGKILLed, the cluster view still works: the name server holds it down at once
/// (its connection closed) and takes it out of routes, `cluster status` shows it down (when last
/// seen) and its slave and the other broker set up, `cluster brokers` (through the slave's admin
/// API) shows it down since the kill. A master that hangs (SIGSTOP) is held down once it has
/// missed three registrations, and is up again when it registers.
#[test]
fn the_cluster_view_shows_a_killed_master_down_and_the_rest_up() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = Namesrv::start(dirs[0].path(), None, 60_000);
    let (cert, key, ca) = ns.tls_files();
    let env = |name: &str| -> Vec<(String, String)> {
        vec![
            ("WASMQ_TLS_CERT".into(), cert.display().to_string()),
            ("WASMQ_TLS_KEY".into(), key.display().to_string()),
            ("WASMQ_PEER_CA".into(), ca.display().to_string()),
            ("WASMQ_ADMIN_TOKEN".into(), TOKEN.into()),
            ("WASMQ_NAMESRV".into(), ns.listen.clone()),
            ("WASMQ_REGISTER_INTERVAL_MS".into(), REGISTER_MS.to_string()),
            ("WASMQ_BROKER_NAME".into(), name.into()),
        ]
    };
    const REGISTER_MS: u64 = 300;
    let start = |dir: &std::path::Path, name: &str| {
        Broker::start(dir, &env(name).iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>())
    };
    let master_a = start(dirs[1].path(), "broker-a");
    let master_b = start(dirs[2].path(), "broker-b");
    let slave_a = Broker::start_slave(dirs[3].path(), &master_a, &[]);
    master_a.cli(&["topic", "create", "orders", "--queues", "2"]);
    master_b.cli(&["topic", "create", "orders", "--queues", "2"]);
    let rt = wasmq_tests::runtime();
    // Each question to a fresh client (a Cluster keeps routes it was given).
    let ask = |what: &str| {
        let cluster = Cluster::new(vec![ns.listen.clone()], &ca);
        rt.block_on(async {
            match what {
                "brokers" => format!("{:?}", cluster.brokers().await),
                _ => format!("{:?}", cluster.route("orders").await),
            }
        })
    };
    // (name, id) → whether the name server holds it down.
    let down = |name: &str, id: u32| -> Option<bool> {
        let cluster = Cluster::new(vec![ns.listen.clone()], &ca);
        let brokers = rt.block_on(cluster.brokers()).unwrap();
        brokers.iter().find(|b| b.broker_name == name && b.broker_id == id).map(|b| b.down_ms_ago.is_some())
    };
    let wait = |what: &str, limit: Duration, f: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !f() {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}; brokers {}", ask("brokers"));
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    };
    wait("every broker registered, with the topic", Duration::from_secs(15), &|| {
        let route = ask("route");
        [("broker-a", 0), ("broker-a", 1), ("broker-b", 0)].iter().all(|&(n, i)| down(n, i) == Some(false))
            && [&master_a.listen, &slave_a.listen, &master_b.listen].iter().all(|a| route.contains(a.as_str()))
    });
    let master_a_addr = master_a.listen.clone();
    master_a.kill();
    let killed = Instant::now();
    // Its connection closed: down at once (well before one registration interval).
    let took = wait("master A held down", Duration::from_millis(REGISTER_MS), &|| down("broker-a", 0) == Some(true));
    println!("master A held down {took:?} after the kill");
    let route = ask("route");
    assert!(!route.contains(&master_a_addr), "a down master is in no route: {route}");
    assert!(route.contains(&slave_a.listen) && route.contains(&master_b.listen), "slave A and master B still are: {route}");

    let out = master_b.cli(&["cluster", "status", "--namesrv", &ns.listen]);
    let line = |name: &str, id: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().take(2).eq([name, id]))
            .unwrap_or_else(|| panic!("{name} {id} missing:\n{out}"))
            .to_owned()
    };
    let dead = line("broker-a", "0");
    assert!(dead.contains(&master_a_addr) && dead.contains("down (last seen"), "master A down, with when last seen:\n{out}");
    // Slave A answers (its link to its master is down, as it should be).
    assert!(!line("broker-a", "1").contains("down (last seen"), "slave A up:\n{out}");
    assert!(!line("broker-b", "0").contains("down"), "master B up:\n{out}");
    let brokers = slave_a.cli(&["cluster", "brokers"]);
    let row = |name: &str, id: &str| -> String {
        brokers
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([name, id]))
            .unwrap_or_else(|| panic!("{name} {id} missing:\n{brokers}"))
            .to_owned()
    };
    let down_for: f64 = row("broker-a", "0")
        .split_whitespace()
        .skip_while(|w| *w != "down")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("master A not shown down:\n{brokers}"));
    assert!(down_for <= killed.elapsed().as_secs_f64() + 1.0, "down for {down_for} s, killed {:?} ago", killed.elapsed());
    assert!(row("broker-a", "1").contains(" up "), "slave A up:\n{brokers}");
    assert!(row("broker-b", "0").contains(" up "), "master B up:\n{brokers}");
    println!("{out}\n{brokers}");

    // Master B hangs: its connection stays open, its registrations stop.
    master_b.signal(libc::SIGSTOP);
    let took = wait("master B held down", Duration::from_millis(REGISTER_MS * 3 + 1500), &|| down("broker-b", 0) == Some(true));
    assert!(took >= Duration::from_millis(REGISTER_MS * 2), "held down after {took:?}: before it missed its registrations");
    println!("hung master B held down {took:?} after SIGSTOP");
    assert!(!ask("route").contains(&master_b.listen), "a hung master is in no route: {}", ask("route"));
    master_b.signal(libc::SIGCONT);
    wait("master B up again", Duration::from_millis(REGISTER_MS * 3), &|| down("broker-b", 0) == Some(false));
    assert!(ask("route").contains(&master_b.listen), "master B back in the route: {}", ask("route"));
}

/// A name server that has just (re)started knows no broker until each registers again (here in
/// a minute): the cluster view still lists the broker it is asked through, as that broker sees
/// itself, rather than an empty cluster.
#[test]
fn the_cluster_view_lists_the_broker_asked_before_the_name_server_knows_it() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ns = Namesrv::start(dirs[0].path(), None, 120_000);
    let (cert, key, ca) = ns.tls_files();
    let (cert, key, ca_s) = (cert.display().to_string(), key.display().to_string(), ca.display().to_string());
    let broker = Broker::start(
        dirs[1].path(),
        &[
            ("WASMQ_TLS_CERT", &cert),
            ("WASMQ_TLS_KEY", &key),
            ("WASMQ_PEER_CA", &ca_s),
            ("WASMQ_ADMIN_TOKEN", TOKEN),
            ("WASMQ_NAMESRV", &ns.listen),
            ("WASMQ_REGISTER_INTERVAL_MS", "60000"),
            ("WASMQ_BROKER_NAME", "broker-a"),
        ],
    );
    let rt = wasmq_tests::runtime();
    let known = |listen: &str| rt.block_on(Cluster::new(vec![listen.to_owned()], &ca).brokers()).unwrap().len();
    let started = Instant::now();
    while known(&ns.listen) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the broker never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listen = ns.listen.clone();
    ns.kill();
    let ns = Namesrv::start_on(&listen, dirs[0].path(), None, 120_000);
    assert_eq!(known(&ns.listen), 0, "a new name server knows no broker yet");
    let out = broker.cli(&["cluster", "brokers"]);
    assert!(out.starts_with(&format!("cluster DefaultCluster (name servers {listen})")), "{out}");
    let row =
        out.lines().find(|l| l.split_whitespace().take(2).eq(["broker-a", "0"])).unwrap_or_else(|| panic!("broker-a missing:\n{out}"));
    assert!(row.contains(" master ") && row.contains(" up ") && row.contains(&broker.listen), "{row}");
}
