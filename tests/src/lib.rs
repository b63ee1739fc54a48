//! Support for wasmq's end-to-end tests: helpers shared by the test binary (`it/`) and the child
//! processes it starts and kills.

pub mod checker;
pub mod netns;
pub mod power_loss;
pub mod rocketmq;

/// The body a crash-test message with sequence number `seq` carries: its length and bytes follow
/// from `seq` alone, so the checker can tell a damaged or misplaced message from the right one.
pub fn crash_body(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 16_384) as usize;
    let mut x = seq ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The queue a crash-test message goes to.
pub fn crash_queue(seq: u64) -> u32 {
    (seq % 4) as u32
}

/// The store configuration both the child and the checker use: 1 MiB segments so roll-over
/// happens several times a cycle.
pub fn crash_store_config(dir: &std::path::Path, sync: bool) -> wasmq_store::StoreConfig {
    let mut c = wasmq_store::StoreConfig::small_for_tests(dir);
    c.message_bytes_max = 64 << 10;
    c.flush = if sync {
        wasmq_store::FlushMode::Sync { timeout: std::time::Duration::from_secs(10) }
    } else {
        wasmq_store::FlushMode::Async { interval: std::time::Duration::from_millis(100) }
    };
    c
}

/// The runtime the end-to-end tests drive clients with: two workers, like the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Every message of queues `0..queues` of `topic`, from the start, each with its queue.
pub async fn drain(conn: &wasmq_client::Connection, topic: &str, queues: u32) -> Vec<(u32, wasmq_client::PulledMessage)> {
    let c = wasmq_client::PullConsumer::new(conn.clone());
    let mut all = Vec::new();
    for q in 0..queues {
        let mut offset = 0;
        loop {
            let r = c.pull(topic, q, offset, 1024, std::time::Duration::ZERO).await.expect("pull");
            if r.messages.is_empty() {
                break;
            }
            offset = r.next_offset;
            all.extend(r.messages.into_iter().map(|m| (q, m)));
        }
    }
    all
}

/// A real `wasmq-broker` process on ports picked by the OS, with its own data directory.
pub mod broker {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// Builds (if needed) and finds the broker binary next to this test binary.
    pub fn broker_binary() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT.get_or_init(|| workspace_binary("wasmq-server", "wasmq-broker")).clone()
    }

    /// Builds (if needed) and finds the `wasmq` CLI next to this test binary.
    pub fn cli_binary() -> PathBuf {
        static BUILT: OnceLock<PathBuf> = OnceLock::new();
        BUILT.get_or_init(|| workspace_binary("wasmq-cli", "wasmq")).clone()
    }

    fn workspace_binary(package: &str, bin: &str) -> PathBuf {
        let exe = std::env::current_exe().expect("own path");
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", package, "--bin", bin]);
        // The binary is taken from this test binary's profile directory (`just chaos` runs in
        // release), so it is built with that profile (`debug` is the `dev` profile's).
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("run cargo build for a binary");
        assert!(status.success(), "building {bin} failed");
        let path = dir.join(bin);
        assert!(path.exists(), "{} missing", path.display());
        path
    }

    #[derive(Debug)]
    pub struct Broker {
        pub child: Child,
        pub data_dir: PathBuf,
        pub listen: String,
        pub admin_listen: String,
        /// The RocketMQ 5 gRPC address.
        pub grpc_listen: String,
        pub ca: PathBuf,
        pub token: String,
        env: Vec<(String, String)>,
    }

    impl Broker {
        /// Starts a broker on `data_dir` with extra `WASMQ_*` settings.
        pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
            Self::start_with(data_dir, env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        }

        fn start_with(data_dir: &Path, env: Vec<(String, String)>) -> Self {
            Self::start_by(Command::new(broker_binary()), data_dir, env)
        }

        /// [`Broker::start`] inside `side` of the partition `lab` (give it listen, admin and
        /// gRPC addresses on that side's address).
        pub fn start_in(lab: &crate::netns::Lab, side: crate::netns::Side, data_dir: &Path, env: &[(String, String)]) -> Self {
            Self::start_by(lab.command(side, &broker_binary()), data_dir, env.to_vec())
        }

        fn start_by(mut cmd: Command, data_dir: &Path, env: Vec<(String, String)>) -> Self {
            cmd.env("WASMQ_DATA_DIR", data_dir)
                .env("WASMQ_LISTEN", "127.0.0.1:0")
                .env("WASMQ_ADMIN_LISTEN", "127.0.0.1:0")
                .env("WASMQ_GRPC_LISTEN", "127.0.0.1:0")
                .env("WASMQ_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start wasmq-broker");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let (mut listen, mut admin_listen, mut ca, mut token) = (String::new(), String::new(), PathBuf::new(), String::new());
            let mut grpc_listen = String::new();
            for line in lines.by_ref() {
                let line = line.expect("broker output");
                if let Some(rest) = line.strip_prefix("wasmq-broker listening on ") {
                    let (l, a) = rest.split_once(" (admin https://").expect("listen line");
                    listen = l.to_owned();
                    admin_listen = a.trim_end_matches(')').to_owned();
                } else if let Some(rest) = line.strip_prefix("RocketMQ 5 gRPC on ") {
                    grpc_listen = rest.trim_end_matches(" (TLS)").to_owned();
                } else if let Some(rest) = line.strip_prefix("development CA: ") {
                    ca = PathBuf::from(rest.split(' ').next().expect("ca path"));
                } else if let Some(t) = line.strip_prefix("admin token: ") {
                    token = t.to_owned();
                    break;
                }
            }
            assert!(!token.is_empty(), "the broker did not start");
            if ca.as_os_str().is_empty() {
                // A configured certificate: clients trust the CA it names for its peers.
                ca = env.iter().find(|(k, _)| k == "WASMQ_PEER_CA").map(|(_, v)| PathBuf::from(v)).unwrap_or_default();
            }
            // Keep draining stdout so the broker never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            Self { child, data_dir: data_dir.to_owned(), listen, admin_listen, grpc_listen, ca, token, env }
        }

        pub fn options(&self) -> wasmq_client::ConnectionOptions {
            wasmq_client::ConnectionOptions::new(&self.listen, &self.ca)
        }

        pub async fn connect(&self) -> wasmq_client::Connection {
            wasmq_client::Connection::connect(self.options()).await.expect("connect")
        }

        pub fn admin(&self) -> wasmq_client::Admin {
            wasmq_client::Admin::new(&self.admin_listen, &self.ca, &self.token).expect("admin client")
        }

        /// The `wasmq` CLI with this broker's addresses, token and CA, and `args`.
        pub fn cli_command(&self, args: &[&str]) -> Command {
            let mut c = Command::new(cli_binary());
            c.args(["--server", &self.listen, "--admin", &self.admin_listen, "--token", &self.token, "--ca"]).arg(&self.ca).args(args);
            c
        }

        /// Runs the `wasmq` CLI against this broker; returns its stdout, panicking with its
        /// stderr when it fails.
        pub fn cli(&self, args: &[&str]) -> String {
            let out = self.cli_command(args).output().expect("run wasmq");
            assert!(out.status.success(), "wasmq {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// SIGTERM and wait: the broker drains, flushes and exits 0.
        pub fn stop(mut self) -> std::process::ExitStatus {
            // SAFETY: kill(2) with a pid we own; no memory is passed.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let status = wait_timeout(&mut self.child, Duration::from_secs(30));
            std::mem::forget(self);
            status
        }

        /// Sends `signal` (e.g. SIGSTOP to hang the broker, SIGCONT to let it go on).
        pub fn signal(&self, signal: i32) {
            // SAFETY: kill(2) with a pid we own; no memory is passed.
            assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0, "kill({signal})");
        }

        /// SIGKILL: no drain, no flush, no checkpoint.
        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::mem::forget(self);
        }

        /// SIGKILL, then a power loss: every byte of the store's files not covered by a
        /// completed fsync is destroyed ([`crate::power_loss`]), from the I/O journal the
        /// broker was started to keep (`WASMQ_IO_JOURNAL` naming `journal`).
        pub fn lose_power(self, journal: &Path, mode: crate::power_loss::Mode) -> crate::power_loss::PowerLoss {
            self.kill();
            let loss = crate::power_loss::lose_power(journal, mode, &mut rand::rng());
            assert!(loss.journal_lines > 0, "the broker kept no I/O journal");
            loss
        }

        /// Starts again on the same data directory and settings.
        pub fn restart_from(data_dir: &Path, env: &[(&str, &str)]) -> Self {
            Self::start(data_dir, env)
        }

        pub fn env(&self) -> &[(String, String)] {
            &self.env
        }

        /// Starts a slave (broker id 1) of `master` on `data_dir`: same certificate, CA, admin
        /// token and segment size, following the master's address.
        pub fn start_slave(data_dir: &Path, master: &Broker, env: &[(&str, &str)]) -> Self {
            let tls = master.data_dir.join("tls");
            let mut all: Vec<(String, String)> = vec![
                ("WASMQ_BROKER_ID".into(), "1".into()),
                ("WASMQ_MASTER".into(), master.listen.clone()),
                ("WASMQ_TLS_CERT".into(), tls.join("server.pem").display().to_string()),
                ("WASMQ_TLS_KEY".into(), tls.join("server-key.pem").display().to_string()),
                ("WASMQ_PEER_CA".into(), master.ca.display().to_string()),
                ("WASMQ_ADMIN_TOKEN".into(), master.token.clone()),
            ];
            // The master's own settings of the broker set win (its certificate, name, name
            // servers, segment size).
            const SHARED: [&str; 10] = [
                "WASMQ_SLAVE_READ_BEHIND_BYTES",
                "WASMQ_TLS_CERT",
                "WASMQ_TLS_KEY",
                "WASMQ_PEER_CA",
                "WASMQ_SEGMENT_BYTES",
                "WASMQ_BROKER_NAME",
                "WASMQ_NAMESRV",
                "WASMQ_CLUSTER",
                "WASMQ_REGISTER_INTERVAL_MS",
                "WASMQ_RETENTION_DISK_PERCENT",
            ];
            for (k, v) in master.env.iter().filter(|(k, _)| SHARED.contains(&k.as_str())) {
                all.retain(|(a, _)| a != k);
                all.push((k.clone(), v.clone()));
            }
            all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Self::start_with(data_dir, all)
        }

        /// SIGKILL, then the same broker again on the same addresses and data.
        pub fn kill_and_restart(self) -> Self {
            let (dir, mut env) = (self.data_dir.clone(), self.env.clone());
            env.retain(|(k, _)| !matches!(k.as_str(), "WASMQ_LISTEN" | "WASMQ_ADMIN_LISTEN" | "WASMQ_GRPC_LISTEN"));
            env.push(("WASMQ_LISTEN".into(), self.listen.clone()));
            env.push(("WASMQ_ADMIN_LISTEN".into(), self.admin_listen.clone()));
            env.push(("WASMQ_GRPC_LISTEN".into(), self.grpc_listen.clone()));
            self.kill();
            Self::start_with(&dir, env)
        }

        /// Starts a killed or stopped broker again on `addrs` (its old listen and admin
        /// addresses), with its data and settings.
        pub fn start_again(data_dir: &Path, env: &[(String, String)], listen: &str, admin_listen: &str) -> Self {
            let mut env = env.to_vec();
            env.retain(|(k, _)| k != "WASMQ_LISTEN" && k != "WASMQ_ADMIN_LISTEN");
            env.push(("WASMQ_LISTEN".into(), listen.to_owned()));
            env.push(("WASMQ_ADMIN_LISTEN".into(), admin_listen.to_owned()));
            Self::start_with(data_dir, env)
        }
    }

    /// A name server process (`wasmq-broker namesrv`) on a port picked by the OS.
    #[derive(Debug)]
    pub struct Namesrv {
        pub child: Child,
        pub data_dir: PathBuf,
        pub listen: String,
        /// Its CA: its own development CA, or the one it was given.
        pub ca: PathBuf,
    }

    impl Namesrv {
        /// Starts a name server on `data_dir`; `tls`: (certificate, key, CA), else it generates
        /// a development CA. Brokers drop out after `broker_expiry_ms` of silence.
        pub fn start(data_dir: &Path, tls: Option<(&Path, &Path, &Path)>, broker_expiry_ms: u64) -> Self {
            Self::start_on("127.0.0.1:0", data_dir, tls, broker_expiry_ms)
        }

        /// [`Namesrv::start`] on address `listen` (e.g. where a killed one was).
        pub fn start_on(listen: &str, data_dir: &Path, tls: Option<(&Path, &Path, &Path)>, broker_expiry_ms: u64) -> Self {
            let mut cmd = Command::new(broker_binary());
            cmd.arg("namesrv")
                .args(["--listen", listen, "--broker-expiry-ms", &broker_expiry_ms.to_string(), "--data-dir"])
                .arg(data_dir)
                .env("WASMQ_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some((c, k, _)) = tls {
                cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
            }
            let mut child = cmd.spawn().expect("start the name server");
            let (listen, dev_ca) = started(&mut child, "wasmq-namesrv listening on ", "the name server");
            let ca = dev_ca.or_else(|| tls.map(|(_, _, ca)| ca.to_owned())).unwrap_or_default();
            Self { child, data_dir: data_dir.to_owned(), listen, ca }
        }

        /// The development certificate, key and CA this name server generated, for the others.
        pub fn tls_files(&self) -> (PathBuf, PathBuf, PathBuf) {
            dev_tls_files(&self.data_dir, &self.ca)
        }

        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::mem::forget(self);
        }
    }

    impl Drop for Namesrv {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Reads a name server's or controller node's start-up lines up to `ready`: the address after
    /// `listening` (up to a space) and the development CA it printed, if any. Its output is
    /// drained from then on.
    fn started(child: &mut Child, listening: &str, what: &str) -> (String, Option<PathBuf>) {
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut listen, mut ca) = (String::new(), None);
        for line in lines.by_ref() {
            let line = line.expect("process output");
            if let Some(rest) = line.strip_prefix(listening) {
                listen = rest.split(' ').next().expect("address").to_owned();
            } else if let Some(rest) = line.strip_prefix("development CA: ") {
                ca = Some(PathBuf::from(rest.split(' ').next().expect("ca path")));
            } else if line == "ready" {
                break;
            }
        }
        assert!(!listen.is_empty(), "{what} did not start");
        std::thread::spawn(move || for _ in lines {});
        (listen, ca)
    }

    /// The development certificate and key in `data_dir`, and `ca`.
    pub fn dev_tls_files(data_dir: &Path, ca: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let d = data_dir.join("tls");
        (d.join("server.pem"), d.join("server-key.pem"), ca.to_owned())
    }

    /// A free TCP address on 127.0.0.1 (bound and released: for processes that must know each
    /// other's addresses before they start).
    pub fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        l.local_addr().expect("local address").to_string()
    }

    /// A controller node process (`wasmq-broker controller`).
    #[derive(Debug)]
    pub struct Controller {
        pub child: Child,
        pub id: u64,
        pub data_dir: PathBuf,
        pub listen: String,
        /// The CA its peers and clients trust.
        pub ca: PathBuf,
        args: Vec<String>,
    }

    impl Controller {
        /// Starts node `id` of `nodes` (id → address) on `data_dir`; `tls`: (certificate, key,
        /// CA), else it generates a development CA (give its files to the others:
        /// [`Controller::tls_files`]). A master silent `master_timeout_ms` is replaced.
        pub fn start(
            id: u64,
            nodes: &[(u64, String)],
            data_dir: &Path,
            tls: Option<(&Path, &Path, &Path)>,
            master_timeout_ms: u64,
        ) -> Self {
            let mut args = Self::args(id, nodes, data_dir, master_timeout_ms);
            if let Some((c, k, ca)) = tls {
                for (flag, path) in [("--tls-cert", c), ("--tls-key", k), ("--peer-ca", ca)] {
                    args.push(flag.into());
                    args.push(path.display().to_string());
                }
            }
            Self::spawn(Command::new(broker_binary()), id, data_dir, args, tls.map(|(_, _, ca)| ca.to_owned()))
        }

        /// Node `id` of `nodes` inside `side` of the partition `lab`, with the certificate,
        /// key and CA `tls`.
        pub fn start_in(
            lab: &crate::netns::Lab,
            side: crate::netns::Side,
            id: u64,
            nodes: &[(u64, String)],
            data_dir: &Path,
            tls: (&Path, &Path, &Path),
            master_timeout_ms: u64,
        ) -> Self {
            let mut args = Self::args(id, nodes, data_dir, master_timeout_ms);
            for (flag, path) in [("--tls-cert", tls.0), ("--tls-key", tls.1), ("--peer-ca", tls.2)] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
            Self::spawn(lab.command(side, &broker_binary()), id, data_dir, args, Some(tls.2.to_owned()))
        }

        fn args(id: u64, nodes: &[(u64, String)], data_dir: &Path, master_timeout_ms: u64) -> Vec<String> {
            let listed: Vec<String> = nodes.iter().map(|(i, a)| format!("{i}={a}")).collect();
            vec![
                "controller".into(),
                "--id".into(),
                id.to_string(),
                "--nodes".into(),
                listed.join(","),
                "--master-timeout-ms".into(),
                master_timeout_ms.to_string(),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ]
        }

        fn spawn(mut program: Command, id: u64, data_dir: &Path, args: Vec<String>, ca: Option<PathBuf>) -> Self {
            let mut child = program
                .args(&args)
                // Raft's complaints about a node the test killed would drown the rest.
                .env("WASMQ_LOG", "warn,openraft=off,wasmq_controller=info")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a controller node");
            let (listen, dev_ca) = started(&mut child, &format!("wasmq-controller node {id} listening on "), "a controller node");
            let ca = dev_ca.or(ca).unwrap_or_default();
            Self { child, id, data_dir: data_dir.to_owned(), listen, ca, args }
        }

        /// The development certificate, key and CA this node generated, for the others.
        pub fn tls_files(&self) -> (PathBuf, PathBuf, PathBuf) {
            dev_tls_files(&self.data_dir, &self.ca)
        }

        /// SIGKILL.
        pub fn kill(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::mem::forget(self);
        }

        /// SIGKILL, then the same node again on its files and settings.
        pub fn kill_and_restart(self) -> Self {
            let (id, dir, args, ca) = (self.id, self.data_dir.clone(), self.args.clone(), self.ca.clone());
            self.kill();
            Self::spawn(Command::new(broker_binary()), id, &dir, args, Some(ca))
        }
    }

    impl Drop for Controller {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("broker did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
