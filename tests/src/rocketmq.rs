//! The official RocketMQ 5 Python client (`tests/rocketmq/requirements.txt`), in a virtualenv
//! made on first use in `<target>/rocketmq-python`, and the scenarios it runs
//! (`tests/rocketmq/scenarios.py`) against a broker's gRPC port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's Python with the client installed (made once, under a file lock, so
/// concurrent test processes do not race).
pub fn python() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("own path");
            // <target>/debug/deps/it-… → <target>
            let target = exe.ancestors().nth(3).expect("target directory");
            let venv = target.join("rocketmq-python");
            let requirements = tests_dir().join("rocketmq/requirements.txt");
            let stamp = venv.join("installed-requirements.txt");
            let want = std::fs::read_to_string(&requirements).expect("tests/rocketmq/requirements.txt");
            std::fs::create_dir_all(target).expect("target directory");
            let lock = std::fs::File::create(target.join("rocketmq-python.lock")).expect("lock file");
            lock.lock().expect("lock the virtualenv");
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
                run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv), "python3 -m venv (needs python3 and python3-venv)");
                run(
                    Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check", "-r"]).arg(&requirements),
                    "pip install -r tests/rocketmq/requirements.txt",
                );
                std::fs::write(&stamp, &want).expect("write the stamp");
            }
            venv.join("bin/python")
        })
        .clone()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// A scenario running in the background: its printed objects arrive on `lines` as it prints them.
#[derive(Debug)]
pub struct Running {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<serde_json::Value>,
    _home: tempfile::TempDir,
}

impl Running {
    /// Waits for the scenario to end; panics if it failed.
    pub fn wait(mut self) {
        let status = self.child.wait().expect("wait for scenarios.py");
        assert!(status.success(), "the scenario failed: {status}");
    }
}

/// Starts `scenario` like [`scenario`] does, without waiting for it.
pub fn start(grpc: &str, ca: &Path, scenario: &str, args: &[&str]) -> Running {
    use std::io::BufRead;
    let home = tempfile::tempdir().expect("a home for the client's logs");
    let mut child = Command::new(python())
        .arg(tests_dir().join("rocketmq/scenarios.py"))
        .args([grpc, scenario])
        .args(args)
        .env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca)
        .env("HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run scenarios.py");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    Running { child, lines, _home: home }
}

/// Runs `scenario` of `tests/rocketmq/scenarios.py` against the gRPC endpoint `grpc` (trusting
/// `ca`) with `args` (its topic first); returns the JSON objects it printed, one per line.
pub fn scenario(grpc: &str, ca: &Path, scenario: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let home = tempfile::tempdir().expect("a home for the client's logs");
    let out = Command::new(python())
        .arg(tests_dir().join("rocketmq/scenarios.py"))
        .args([grpc, scenario])
        .args(args)
        .env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca)
        // The client writes its logs under ~/logs.
        .env("HOME", home.path())
        .output()
        .expect("run scenarios.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scenario {scenario} failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}
