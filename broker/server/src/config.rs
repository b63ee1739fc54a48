//! Configuration: a TOML file (optional) and `WASMQ_*` environment overrides give a
//! [`RawConfig`]; [`Config::try_from`] checks every value once and names the bad key.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wasmq_store::{FlushMode, StoreConfig};

/// Most concurrent client connections (a semaphore bounds them).
pub const CONNECTIONS_MAX_DEFAULT: u32 = 1024;
/// Most requests in flight on one connection.
pub const IN_FLIGHT_MAX_DEFAULT: u32 = 256;

/// The configuration as written: every field optional.
/// A secret setting: its `Debug` does not show it.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub broker_name: Option<String>,
    /// Client (binary protocol over TLS) address, e.g. `127.0.0.1:7070`; port 0 picks one.
    pub listen: Option<String>,
    /// Admin HTTPS address.
    pub admin_listen: Option<String>,
    /// RocketMQ 5 gRPC (TLS, HTTP/2) address, e.g. `127.0.0.1:8081`; port 0 picks one.
    pub grpc_listen: Option<String>,
    /// The host other machines reach this broker at (RocketMQ's `brokerIP1`): published with the
    /// listeners' ports to name servers, the controller and slaves instead of the bind address.
    pub advertise_host: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// PEM server certificate chain and key; without them a development CA and certificate are
    /// generated in `<data_dir>/tls/` on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Bearer token of the admin API; without one, one is generated into `<data_dir>/admin-token`.
    pub admin_token: Option<String>,
    /// A read-only token of the admin API (GET only); none by default.
    pub admin_read_token: Option<String>,
    /// `sync` or `async`.
    pub flush: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub flush_timeout_ms: Option<u64>,
    pub segment_bytes: Option<u64>,
    pub message_bytes_max: Option<u32>,
    pub retention_hours: Option<u64>,
    /// Above this disk use (percent), the oldest segments are deleted even if younger than
    /// the retention (default 75).
    pub retention_disk_percent: Option<u64>,
    /// Fault the next log segment's pages in ahead of the writer (default false).
    pub pretouch_segments: Option<bool>,
    /// Bytes of flushed log behind the write position kept in the page cache (default 2 GiB);
    /// older pages are dropped in 16 MiB steps so new appends reuse warm memory. -1: leave it
    /// to the kernel.
    pub cached_bytes_behind: Option<i64>,
    /// A consumer-group member silent this long loses its queues.
    pub group_session_timeout_ms: Option<u64>,
    /// Redelivery delays of sent-back messages, by reconsume count (the last repeats).
    pub retry_delays_ms: Option<Vec<u64>>,
    /// Sends back after which a message goes to the group's dead-letter topic.
    pub max_reconsume_times: Option<u32>,
    /// How long an orderly consumer's queue lock lasts unless renewed.
    pub order_lock_ttl_ms: Option<u64>,
    /// A transaction without a decision is first checked with its producer group this long
    /// after its half message was stored, then at this interval (default 30000).
    pub transaction_check_interval_ms: Option<u64>,
    /// Checks answered unknown (or not at all) before a half message is discarded (default 15).
    pub transaction_checks_max: Option<u32>,
    /// Longest delay of a scheduled message (default 7 days).
    pub delay_max_ms: Option<u64>,
    /// 0: the master of its broker set; 1 and up: a slave (needs `master`).
    pub broker_id: Option<u32>,
    /// A slave's master: its protocol address.
    pub master: Option<String>,
    /// The user a slave logs in to its master as, once the master has users (it needs admin
    /// on the cluster), and its password.
    pub replication_user: Option<String>,
    pub replication_password: Option<Secret>,
    /// A master's acknowledgement: `async` (after the local append) or `sync` (also once
    /// `sync_replicas` slaves hold it).
    pub replication: Option<String>,
    pub sync_replicas: Option<u32>,
    /// How long a synchronous send waits for slaves (default 3000).
    pub replica_timeout_ms: Option<u64>,
    /// CA (PEM) that signs the other brokers' and name servers' certificates (default: the
    /// development CA in `<data_dir>/tls/`).
    pub peer_ca: Option<PathBuf>,
    /// Consumers reading further behind the log end than this (bytes) are told to read from
    /// a slave, and back once within half of it (default 0: never).
    pub slave_read_behind_bytes: Option<u64>,
    /// Name servers to register with (protocol addresses).
    pub namesrv: Option<Vec<String>>,
    /// The failover controller's nodes (protocol addresses): the controller then decides which
    /// member of the broker set is master (`master` is not set).
    pub controller: Option<Vec<String>>,
    /// The cluster this broker set belongs to (default `DefaultCluster`).
    pub cluster: Option<String>,
    /// How often the broker registers with each name server (default 30000).
    pub register_interval_ms: Option<u64>,
    pub connections_max: Option<u32>,
    pub in_flight_max: Option<u32>,
    pub frame_bytes_max: Option<u32>,
    /// Linear memory cap of a plugin instance, MiB (default 16).
    pub plugin_memory_mib: Option<u32>,
    /// Deadline of one plugin batch call, ms (default 10).
    pub plugin_call_timeout_ms: Option<u64>,
    /// Live plugin instances, all plugins together (default 128).
    pub plugin_instances_max: Option<u32>,
}

/// A bad configuration value, by key.
#[derive(Debug, thiserror::Error)]
#[error("config `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), reason: reason.into() }
}

/// `WASMQ_*` variables that are not broker settings and are let through: the log filter, the
/// store's I/O journal (power-loss tests), the name server's, the CLI's (a shell set up for the
/// CLI can start a broker too), and the build's and tests' own.
const ENV_NOT_SETTINGS: &[&str] = &[
    "LOG",
    "IO_JOURNAL",
    "BROKER_EXPIRY_MS",
    "SERVER",
    "ADMIN",
    "CA",
    "TOKEN",
    "TOOLS",
    "SKIP_ROOT_TESTS",
    "CRASH_CYCLES",
    "REPLICATION_CYCLES",
    "FAILOVER_CYCLES",
];

/// Every setting, by its TOML key (`WASMQ_` + the key in capitals in the environment).
const SETTINGS: &[&str] = &[
    "broker_name",
    "listen",
    "admin_listen",
    "grpc_listen",
    "advertise_host",
    "data_dir",
    "tls_cert",
    "tls_key",
    "admin_token",
    "admin_read_token",
    "flush",
    "flush_interval_ms",
    "flush_timeout_ms",
    "segment_bytes",
    "message_bytes_max",
    "retention_hours",
    "retention_disk_percent",
    "cached_bytes_behind",
    "pretouch_segments",
    "connections_max",
    "group_session_timeout_ms",
    "retry_delays_ms",
    "max_reconsume_times",
    "order_lock_ttl_ms",
    "transaction_check_interval_ms",
    "transaction_checks_max",
    "delay_max_ms",
    "broker_id",
    "master",
    "replication_user",
    "replication_password",
    "replication",
    "sync_replicas",
    "replica_timeout_ms",
    "peer_ca",
    "slave_read_behind_bytes",
    "namesrv",
    "controller",
    "cluster",
    "register_interval_ms",
    "in_flight_max",
    "frame_bytes_max",
    "plugin_memory_mib",
    "plugin_call_timeout_ms",
    "plugin_instances_max",
];

/// An unknown `WASMQ_<key>` variable, refused as an unknown TOML key is, with the closest
/// setting's name when one is close.
fn unknown_variable(key: &str) -> ConfigError {
    let var = format!("WASMQ_{}", key.to_ascii_uppercase());
    let closest = SETTINGS.iter().map(|s| (strsim::levenshtein(s, key), *s)).min().filter(|(d, s)| *d <= 2.max(s.len() / 4));
    let reason = match closest {
        Some((_, s)) => format!("{var} is not a setting; did you mean WASMQ_{}?", s.to_ascii_uppercase()),
        None => format!("{var} is not a setting (docs/operations.md lists them)"),
    };
    bad(&var, reason)
}

impl RawConfig {
    /// Reads `path` (TOML) if given, then applies `WASMQ_<KEY>` environment variables.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, unknown key, or an environment value of the wrong type.
    pub fn load(path: Option<&std::path::Path>, env: impl Iterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| bad("config", format!("{}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| bad("config", format!("{}: {e}", p.display())))?
            }
            None => RawConfig::default(),
        };
        for (k, v) in env {
            let Some(key) = k.strip_prefix("WASMQ_") else { continue };
            let key = key.to_ascii_lowercase();
            let num = |v: &str| v.parse::<u64>().map_err(|_| bad(&key, format!("{v:?} is not a number")));
            match key.as_str() {
                "broker_name" => raw.broker_name = Some(v),
                "listen" => raw.listen = Some(v),
                "admin_listen" => raw.admin_listen = Some(v),
                "grpc_listen" => raw.grpc_listen = Some(v),
                "advertise_host" => raw.advertise_host = Some(v),
                "data_dir" => raw.data_dir = Some(v.into()),
                "tls_cert" => raw.tls_cert = Some(v.into()),
                "tls_key" => raw.tls_key = Some(v.into()),
                "admin_token" => raw.admin_token = Some(v),
                "admin_read_token" => raw.admin_read_token = Some(v),
                "flush" => raw.flush = Some(v),
                "flush_interval_ms" => raw.flush_interval_ms = Some(num(&v)?),
                "flush_timeout_ms" => raw.flush_timeout_ms = Some(num(&v)?),
                "segment_bytes" => raw.segment_bytes = Some(num(&v)?),
                "message_bytes_max" => raw.message_bytes_max = Some(num(&v)? as u32),
                "retention_hours" => raw.retention_hours = Some(num(&v)?),
                "retention_disk_percent" => raw.retention_disk_percent = Some(num(&v)?),
                "cached_bytes_behind" => {
                    raw.cached_bytes_behind = Some(v.parse().map_err(|_| bad(&key, format!("{v:?} is not a number")))?);
                }
                "pretouch_segments" => {
                    raw.pretouch_segments = Some(v.parse().map_err(|_| bad(&key, format!("{v:?} is not true or false")))?);
                }
                "connections_max" => raw.connections_max = Some(num(&v)? as u32),
                "group_session_timeout_ms" => raw.group_session_timeout_ms = Some(num(&v)?),
                "retry_delays_ms" => raw.retry_delays_ms = Some(v.split(',').map(|x| num(x.trim())).collect::<Result<_, _>>()?),
                "max_reconsume_times" => raw.max_reconsume_times = Some(num(&v)? as u32),
                "order_lock_ttl_ms" => raw.order_lock_ttl_ms = Some(num(&v)?),
                "transaction_check_interval_ms" => raw.transaction_check_interval_ms = Some(num(&v)?),
                "transaction_checks_max" => raw.transaction_checks_max = Some(num(&v)? as u32),
                "delay_max_ms" => raw.delay_max_ms = Some(num(&v)?),
                "broker_id" => raw.broker_id = Some(num(&v)? as u32),
                "master" => raw.master = Some(v),
                "replication_user" => raw.replication_user = Some(v),
                "replication_password" => raw.replication_password = Some(Secret(v)),
                "replication" => raw.replication = Some(v),
                "sync_replicas" => raw.sync_replicas = Some(num(&v)? as u32),
                "replica_timeout_ms" => raw.replica_timeout_ms = Some(num(&v)?),
                "peer_ca" => raw.peer_ca = Some(v.into()),
                "slave_read_behind_bytes" => raw.slave_read_behind_bytes = Some(num(&v)?),
                "namesrv" => raw.namesrv = Some(v.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()),
                "controller" => raw.controller = Some(v.split(',').map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()),
                "cluster" => raw.cluster = Some(v),
                "register_interval_ms" => raw.register_interval_ms = Some(num(&v)?),
                "in_flight_max" => raw.in_flight_max = Some(num(&v)? as u32),
                "frame_bytes_max" => raw.frame_bytes_max = Some(num(&v)? as u32),
                "plugin_memory_mib" => raw.plugin_memory_mib = Some(num(&v)? as u32),
                "plugin_call_timeout_ms" => raw.plugin_call_timeout_ms = Some(num(&v)?),
                "plugin_instances_max" => raw.plugin_instances_max = Some(num(&v)? as u32),
                k if ENV_NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(k)) => {}
                _ => return Err(unknown_variable(&key)),
            }
        }
        Ok(raw)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker_name: String,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    /// The host published instead of the listeners' bind addresses (see [`Config::published`]).
    pub advertise_host: Option<String>,
    pub data_dir: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub admin_token: Option<String>,
    pub admin_read_token: Option<String>,
    pub store: StoreConfig,
    pub connections_max: NonZeroU32,
    pub in_flight_max: NonZeroU32,
    pub frame_bytes_max: u32,
    pub group_session_timeout: Duration,
    pub retry_delays_ms: Vec<u64>,
    pub max_reconsume_times: u32,
    pub order_lock_ttl: Duration,
    pub park: wasmq_engine::ParkPolicy,
    pub broker_id: u32,
    /// A slave's master address.
    pub master: Option<String>,
    /// Who a slave logs in to its master as (`Credentials`' `Debug` hides the password).
    pub replication_login: Option<wasmq_protocol::Credentials>,
    pub replication: wasmq_service::Mode,
    pub peer_ca: Option<PathBuf>,
    pub slave_read_behind_bytes: u64,
    pub namesrv: Vec<String>,
    /// The failover controller's nodes; empty: the role is `master` / `broker_id`'s.
    pub controller: Vec<String>,
    pub cluster: String,
    pub register_interval: Duration,
    pub plugin_limits: wasmq_plugin_host::Limits,
}

fn addr(key: &str, v: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_owned());
    v.parse().map_err(|_| bad(key, format!("{v:?} is not an address like 127.0.0.1:7070")))
}

/// Longest `advertise_host` (a DNS name's limit).
pub const ADVERTISE_HOST_BYTES_MAX: usize = 253;

/// An IP address or a host name, without a port.
fn advertise_host(v: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(h) = v else { return Ok(None) };
    let ok_name = !h.is_empty()
        && h.len() <= ADVERTISE_HOST_BYTES_MAX
        && h.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if h.parse::<std::net::IpAddr>().is_ok() || ok_name {
        Ok(Some(h))
    } else {
        Err(bad("advertise_host", format!("{h:?} is not an IP address or host name (without a port)")))
    }
}

impl Config {
    /// `bound` as other hosts reach it: `advertise_host` with its port, else itself.
    #[must_use]
    pub fn published(&self, bound: SocketAddr) -> String {
        match &self.advertise_host {
            Some(h) if h.contains(':') => format!("[{h}]:{}", bound.port()),
            Some(h) => format!("{h}:{}", bound.port()),
            None => bound.to_string(),
        }
    }
}

fn non_zero(key: &str, v: Option<u32>, default: u32) -> Result<NonZeroU32, ConfigError> {
    NonZeroU32::new(v.unwrap_or(default)).ok_or_else(|| bad(key, "must be > 0"))
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        let broker_name = raw.broker_name.unwrap_or_else(|| "broker-a".to_owned());
        wasmq_store::validate_topic(&broker_name).map_err(|e| bad("broker_name", e.to_string()))?;
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(bad("tls_cert/tls_key", "give both or neither")),
        };
        if let Some(t) = &raw.admin_token
            && t.len() < 16
        {
            return Err(bad("admin_token", "at least 16 characters"));
        }
        let mut store = StoreConfig::new(data_dir.join("store"));
        let timeout = Duration::from_millis(raw.flush_timeout_ms.unwrap_or(5000));
        let interval = Duration::from_millis(raw.flush_interval_ms.unwrap_or(500));
        store.flush = match raw.flush.as_deref().unwrap_or("async") {
            "sync" => FlushMode::Sync { timeout },
            "async" => FlushMode::Async { interval },
            other => return Err(bad("flush", format!("{other:?}: `sync` or `async`"))),
        };
        if let Some(b) = raw.segment_bytes {
            store.segment_bytes = b;
        }
        if let Some(m) = raw.message_bytes_max {
            store.message_bytes_max = m;
        }
        if let Some(p) = raw.pretouch_segments {
            store.pretouch_segments = p;
        }
        match raw.cached_bytes_behind {
            None => {}
            Some(-1) => store.cached_bytes_behind = None,
            Some(n) => {
                store.cached_bytes_behind = Some(u64::try_from(n).map_err(|_| bad("cached_bytes_behind", format!("{n}: -1 or 0..")))?)
            }
        }
        match raw.retention_disk_percent {
            Some(p) if !(1..=100).contains(&p) => return Err(bad("retention_disk_percent", "between 1 and 100")),
            Some(p) => store.retention_disk_ratio_max = p as f64 / 100.0,
            None => {}
        }
        if let Some(h) = raw.retention_hours {
            store.retention = Duration::from_secs(h.saturating_mul(3600));
        }
        store.validate().map_err(|e| bad(e.key, e.reason))?;
        if store.message_bytes_max as usize > wasmq_protocol::MESSAGE_BYTES_MAX {
            return Err(bad("message_bytes_max", format!("at most {}", wasmq_protocol::MESSAGE_BYTES_MAX)));
        }
        let frame_bytes_max = raw.frame_bytes_max.unwrap_or(wasmq_protocol::FRAME_BYTES_MAX as u32);
        if (frame_bytes_max as usize) < store.message_bytes_max as usize + 64 * 1024
            || frame_bytes_max as usize > wasmq_protocol::FRAME_BYTES_MAX
        {
            return Err(bad("frame_bytes_max", format!("between message_bytes_max + 64 KiB and {}", wasmq_protocol::FRAME_BYTES_MAX)));
        }
        let listen = addr("listen", raw.listen, "127.0.0.1:7070")?;
        let admin_listen = addr("admin_listen", raw.admin_listen, "127.0.0.1:7071")?;
        // RocketMQ's proxy serves gRPC on 8081.
        let grpc_listen = addr("grpc_listen", raw.grpc_listen, "127.0.0.1:8081")?;
        let advertise_host = advertise_host(raw.advertise_host)?;
        let published_to = raw.namesrv.as_ref().is_some_and(|n| !n.is_empty()) || raw.controller.as_ref().is_some_and(|c| !c.is_empty());
        if advertise_host.is_none() && published_to {
            let every_interface = [("listen", listen), ("admin_listen", admin_listen), ("grpc_listen", grpc_listen)]
                .into_iter()
                .find(|(_, a)| a.ip().is_unspecified());
            if let Some((key, a)) = every_interface {
                return Err(bad(
                    "advertise_host",
                    format!(
                        "{key} {a} is no address other hosts can reach: name the host name servers, the controller and slaves should use"
                    ),
                ));
            }
        }
        Ok(Self {
            advertise_host,
            broker_name,
            listen,
            admin_listen,
            grpc_listen,
            data_dir,
            tls,
            admin_read_token: match raw.admin_read_token {
                Some(t) if t.len() < 16 => return Err(bad("admin_read_token", "at least 16 characters")),
                Some(t) if raw.admin_token.as_deref() == Some(t.as_str()) => {
                    return Err(bad("admin_read_token", "must differ from admin_token"));
                }
                t => t,
            },
            admin_token: raw.admin_token,
            store,
            connections_max: non_zero("connections_max", raw.connections_max, CONNECTIONS_MAX_DEFAULT)?,
            in_flight_max: non_zero("in_flight_max", raw.in_flight_max, IN_FLIGHT_MAX_DEFAULT)?,
            frame_bytes_max,
            group_session_timeout: match raw.group_session_timeout_ms {
                Some(ms) if !(1000..=600_000).contains(&ms) => return Err(bad("group_session_timeout_ms", "between 1000 and 600000")),
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_millis(wasmq_engine::GROUP_SESSION_TIMEOUT_MS_DEFAULT),
            },
            retry_delays_ms: match raw.retry_delays_ms {
                Some(d) if d.is_empty() || d.len() > 64 || d.contains(&0) => {
                    return Err(bad("retry_delays_ms", "1 to 64 delays, each > 0"));
                }
                Some(d) => d,
                None => wasmq_engine::RETRY_DELAYS_MS_DEFAULT.to_vec(),
            },
            max_reconsume_times: match raw.max_reconsume_times {
                Some(n) if n > 1000 => return Err(bad("max_reconsume_times", "at most 1000")),
                Some(n) => n,
                None => wasmq_engine::MAX_RECONSUME_TIMES_DEFAULT,
            },
            order_lock_ttl: match raw.order_lock_ttl_ms {
                Some(ms) if !(1000..=600_000).contains(&ms) => return Err(bad("order_lock_ttl_ms", "between 1000 and 600000")),
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_millis(wasmq_engine::ORDER_LOCK_TTL_MS_DEFAULT),
            },
            broker_id: raw.broker_id.unwrap_or(0),
            replication_login: match (raw.replication_user, raw.replication_password) {
                (Some(user), Some(Secret(password))) => Some(wasmq_protocol::Credentials { user, password }),
                (None, None) => None,
                _ => return Err(bad("replication_user/replication_password", "give both or neither")),
            },
            master: match (raw.broker_id.unwrap_or(0), raw.master) {
                (_, Some(_)) if raw.controller.as_ref().is_some_and(|c| !c.is_empty()) => {
                    return Err(bad("master", "with a controller, the controller names the master: leave `master` unset"));
                }
                (_, None) if raw.controller.as_ref().is_some_and(|c| !c.is_empty()) => None,
                (0, Some(_)) => return Err(bad("master", "only a slave (broker_id ≥ 1) has a master")),
                (0, None) => None,
                (_, None) => return Err(bad("master", "a slave (broker_id ≥ 1) needs its master's address")),
                (_, Some(m)) => Some(m),
            },
            replication: match raw.replication.as_deref().unwrap_or("async") {
                "async" => wasmq_service::Mode::Async,
                "sync" => wasmq_service::Mode::Sync {
                    replicas: match raw.sync_replicas {
                        Some(n) if !(1..=16).contains(&n) => return Err(bad("sync_replicas", "between 1 and 16")),
                        n => n.unwrap_or(1),
                    },
                    timeout: match raw.replica_timeout_ms {
                        Some(ms) if !(10..=60_000).contains(&ms) => return Err(bad("replica_timeout_ms", "between 10 and 60000")),
                        ms => Duration::from_millis(ms.unwrap_or(3_000)),
                    },
                },
                other => return Err(bad("replication", format!("{other:?}: `async` or `sync`"))),
            },
            peer_ca: raw.peer_ca,
            slave_read_behind_bytes: raw.slave_read_behind_bytes.unwrap_or(0),
            namesrv: raw.namesrv.unwrap_or_default(),
            controller: match raw.controller {
                Some(c) if !c.is_empty() && listen.port() == 0 => {
                    return Err(bad(
                        "listen",
                        format!("{listen}: with a controller, give a port (the controller hands this address to the slaves)"),
                    ));
                }
                c => c.unwrap_or_default(),
            },
            cluster: raw.cluster.unwrap_or_else(|| "DefaultCluster".to_owned()),
            register_interval: match raw.register_interval_ms {
                Some(ms) if !(100..=60_000).contains(&ms) => return Err(bad("register_interval_ms", "between 100 and 60000")),
                ms => Duration::from_millis(ms.unwrap_or(30_000)),
            },
            park: wasmq_engine::ParkPolicy {
                check_interval_ms: match raw.transaction_check_interval_ms {
                    Some(ms) if !(100..=86_400_000).contains(&ms) => {
                        return Err(bad("transaction_check_interval_ms", "between 100 and 86400000"));
                    }
                    Some(ms) => ms,
                    None => wasmq_engine::TX_CHECK_INTERVAL_MS_DEFAULT,
                },
                checks_max: match raw.transaction_checks_max {
                    Some(n) if !(1..=1000).contains(&n) => return Err(bad("transaction_checks_max", "between 1 and 1000")),
                    Some(n) => n,
                    None => wasmq_engine::TX_CHECKS_MAX_DEFAULT,
                },
                delay_max_ms: match raw.delay_max_ms {
                    Some(ms) if !(1000..=90 * 86_400_000).contains(&ms) => return Err(bad("delay_max_ms", "between 1000 and 90 days")),
                    Some(ms) => ms,
                    None => wasmq_engine::DELAY_MAX_MS_DEFAULT,
                },
            },
            plugin_limits: {
                let d = wasmq_plugin_host::Limits::default();
                wasmq_plugin_host::Limits {
                    memory_bytes: match raw.plugin_memory_mib {
                        Some(m) if !(1..=4096).contains(&m) => return Err(bad("plugin_memory_mib", "between 1 and 4096")),
                        Some(m) => (m as usize) << 20,
                        None => d.memory_bytes,
                    },
                    call_timeout: match raw.plugin_call_timeout_ms {
                        Some(ms) if !(1..=10_000).contains(&ms) => return Err(bad("plugin_call_timeout_ms", "between 1 and 10000")),
                        Some(ms) => Duration::from_millis(ms),
                        None => d.call_timeout,
                    },
                    instances_max: match raw.plugin_instances_max {
                        Some(n) if !(1..=10_000).contains(&n) => return Err(bad("plugin_instances_max", "between 1 and 10000")),
                        Some(n) => n,
                        None => d.instances_max,
                    },
                    ..d
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    /// SETTINGS names exactly what the environment reads: each is taken (a value of the wrong
    /// type may be refused, but not the name).
    #[test]
    fn every_listed_setting_is_read_from_the_environment() {
        for key in SETTINGS {
            let var = format!("WASMQ_{}", key.to_ascii_uppercase());
            if let Err(e) = RawConfig::load(None, env(&[(&var, "1")])) {
                assert!(!e.to_string().contains("not a setting"), "{var}: {e}");
            }
        }
    }

    #[test]
    fn defaults_env_overrides_and_named_errors() {
        let c = Config::try_from(RawConfig::load(None, env(&[])).unwrap()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert!(matches!(c.store.flush, FlushMode::Async { .. }));
        let c = Config::try_from(RawConfig::load(None, env(&[("WASMQ_FLUSH", "sync"), ("WASMQ_LISTEN", "127.0.0.1:0")])).unwrap()).unwrap();
        assert!(matches!(c.store.flush, FlushMode::Sync { .. }));
        assert_eq!(c.listen.port(), 0);
        for (k, v, key) in [
            ("WASMQ_FLUSH", "sometimes", "flush"),
            ("WASMQ_LISTEN", "nowhere", "listen"),
            ("WASMQ_SEGMENT_BYTES", "1000", "segment_bytes"),
            ("WASMQ_CONNECTIONS_MAX", "0", "connections_max"),
            ("WASMQ_ADMIN_TOKEN", "short", "admin_token"),
            ("WASMQ_GRPC_LISTEN", "nowhere", "grpc_listen"),
        ] {
            let e = Config::try_from(RawConfig::load(None, env(&[(k, v)])).unwrap()).unwrap_err();
            assert_eq!(e.key, key, "{k}={v}: {e}");
        }
        let e = RawConfig::load(None, env(&[("WASMQ_FLUSHH", "sync")])).unwrap_err();
        assert_eq!(e.to_string(), "config `WASMQ_FLUSHH`: WASMQ_FLUSHH is not a setting; did you mean WASMQ_FLUSH?");
        let e = RawConfig::load(None, env(&[("WASMQ_NOTHING_LIKE_IT", "1")])).unwrap_err();
        assert!(e.to_string().contains("WASMQ_NOTHING_LIKE_IT is not a setting"), "{e}");
        for ok in ["WASMQ_LOG", "WASMQ_IO_JOURNAL", "WASMQ_TOKEN", "PATH"] {
            RawConfig::load(None, env(&[(ok, "x")])).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = RawConfig::load(None, env(&[("WASMQ_SEGMENT_BYTES", "lots")])).unwrap_err();
        assert_eq!(e.key, "segment_bytes");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\nbogus = 1\n").unwrap();
        assert!(RawConfig::load(Some(&p), env(&[])).unwrap_err().reason.contains("bogus"));
    }

    #[test]
    fn the_advertised_host_replaces_the_bind_address_where_others_connect() {
        let load = |vars: &[(&str, &str)]| Config::try_from(RawConfig::load(None, env(vars)).unwrap());
        let bound: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let c = load(&[("WASMQ_ADVERTISE_HOST", "broker-a.example.com")]).unwrap();
        assert_eq!(c.published(bound), "broker-a.example.com:7070");
        assert_eq!(load(&[("WASMQ_ADVERTISE_HOST", "fd00::7")]).unwrap().published(bound), "[fd00::7]:7070");
        assert_eq!(load(&[]).unwrap().published("10.0.0.5:7070".parse().unwrap()), "10.0.0.5:7070", "without it, the bind address");
        for bad_host in ["host:7070", "", "a..b", "white space", &"x".repeat(ADVERTISE_HOST_BYTES_MAX + 1)] {
            let e = load(&[("WASMQ_ADVERTISE_HOST", bad_host)]).unwrap_err();
            assert_eq!(e.key, "advertise_host", "{bad_host:?}: {e}");
        }
        // Bound to every interface and published to name servers or a controller: which address
        // would they hand out? Refused, naming the setting.
        for to in [("WASMQ_NAMESRV", "10.0.0.9:9876"), ("WASMQ_CONTROLLER", "10.0.0.9:9878")] {
            let e = load(&[("WASMQ_LISTEN", "0.0.0.0:7070"), to]).unwrap_err();
            assert_eq!(e.key, "advertise_host", "{to:?}: {e}");
            assert!(e.to_string().contains("listen 0.0.0.0:7070"), "{e}");
            let e = load(&[("WASMQ_LISTEN", "10.0.0.5:7070"), ("WASMQ_ADMIN_LISTEN", "0.0.0.0:7071"), to]).unwrap_err();
            assert!(e.to_string().contains("admin_listen 0.0.0.0:7071"), "{e}");
            load(&[("WASMQ_LISTEN", "0.0.0.0:7070"), ("WASMQ_GRPC_LISTEN", "[::]:8081"), to, ("WASMQ_ADVERTISE_HOST", "10.0.0.5")])
                .unwrap();
        }
        load(&[("WASMQ_LISTEN", "0.0.0.0:7070")]).expect("a broker publishing to no one may bind every interface");
    }
}
