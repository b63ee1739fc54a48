//! wasmq's use cases, the same under every protocol front end (the native protocol today, the
//! RocketMQ 5 gRPC and Kafka protocols next) and the admin API:
//!
//! - [`Service::send`]: a batch placed by the topic's plugins, held when it is a transaction's
//!   half or scheduled, appended — plain sends from every connection together: one writer at a
//!   time appends all that queued (`appender.rs`, the group append) — and answered once as safe as the
//!   broker set promises (flush and replication), with a [`Guarantee`] saying which held.
//! - [`Service::pull`]: a queue read with a tag filter and the group's filter plugin, waiting
//!   (long poll) until a message arrives, a held retry falls due, or the deadline.
//! - [`Service::receive`]: messages one by one with receipt handles, hidden until acknowledged
//!   (`receive.rs`; the state is the engine's), and the [`reviver`] timer.
//! - groups, offsets, queue locks, retries (`groups.rs`); end-transaction and the timers of
//!   held messages, which reach producers through [`ProducerLinks`] a front end implements
//!   (`held.rs`); replication's master side (`replication.rs`).
//!
//! - who may do what: [`Service::authorize`] over `wasmq-auth`'s users and policies, with the
//!   rights of internal topics taken from their owners (`authz.rs`).
//!
//! Knows the engine and the store; no sockets, no wire types. Errors are [`ServiceError`];
//! each front end maps them to its codes in one file.

mod appender;
mod authz;
mod error;
mod groups;
mod held;
pub mod metrics;
mod pull;
mod receive;
mod replication;
mod send;

use std::sync::Arc;

use wasmq_engine::{Engine, Plugins};
use wasmq_store::FlushMode;

pub use appender::{GROUP_BYTES_MAX, GROUP_SENDS_MAX};
pub use authz::{Asker, topic_resource};
pub use error::ServiceError;
pub use groups::TxOutcome;
pub use held::{AllProducers, Asked, CHECK_SEND_TIMEOUT, CheckBack, ProducerLinks, check_back, scheduler};
pub use metrics::Metrics;
pub use pull::{PULL_BYTES_MAX, Pull, Pulled, ReadFrom};
pub use receive::{RECEIVE_BATCH_MAX, REVIVE_INTERVAL, Receive, reviver};
pub use replication::{
    FETCH_BYTES_MAX, FETCH_WAIT_MS, Fetched, IN_SYNC_CAUGHT_UP_WITHIN, MasterLink, Mode, ReplicaMeta, Replication, Role, SLAVES_MAX,
};
pub use send::{Answer, Guarantee, Send, Sent, TransactionSend};
pub use wasmq_auth::{Action, Effect, Identity, Pattern, Policy, Resource, Security, Subject};

/// The error for a topic that does not exist, saying how to make it.
#[must_use]
pub fn unknown_topic(topic: &str) -> ServiceError {
    ServiceError::UnknownTopic(format!(
        "topic {topic} does not exist; create it first (`wasmq topic create {topic} --queues N`, the admin API or the console)"
    ))
}

/// The use cases over one broker's engine. Share it in an `Arc`; every front end holds one.
#[derive(Debug)]
pub struct Service {
    engine: Arc<Engine>,
    plugins: Arc<dyn Plugins>,
    replication: Arc<Replication>,
    appender: appender::Appender,
    metrics: Arc<Metrics>,
    /// Where the next receive starts among its queues (`receive.rs`).
    receive_turn: std::sync::atomic::AtomicUsize,
    /// Sends waiting to be appended together ([`Service::send_gathered`]).
    gathered: send::Gathered,
    /// Users and policies (`authz.rs`); without users everything is allowed.
    security: Arc<Security>,
    /// Refusals, failed logins and admin changes (none kept by default).
    audit: Arc<wasmq_auth::AuditLog>,
}

impl Service {
    #[must_use]
    pub fn new(engine: Arc<Engine>, plugins: Arc<dyn Plugins>, replication: Arc<Replication>) -> Self {
        let metrics = Arc::new(Metrics::default());
        let fsync = metrics.log_fsync_seconds.clone();
        engine.store().on_log_sync(move |took| fsync.observe(took.as_secs_f64()));
        let appender = appender::Appender::new(Arc::clone(&engine), Arc::clone(&metrics));
        Self {
            engine,
            plugins,
            replication,
            appender,
            metrics,
            receive_turn: std::sync::atomic::AtomicUsize::new(0),
            gathered: send::Gathered::default(),
            security: Arc::new(Security::in_memory()),
            audit: Arc::new(wasmq_auth::AuditLog::disabled()),
        }
    }

    /// The audit log to keep (default: none).
    #[must_use]
    pub fn with_audit(mut self, audit: Arc<wasmq_auth::AuditLog>) -> Self {
        self.audit = audit;
        self
    }

    /// The users and policies requests are checked against (default: none, so all allowed).
    #[must_use]
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = security;
        self
    }

    /// The counters and histograms every front end and the service feed.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    #[must_use]
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Whether a send is answered as soon as it is appended: async flush and no synchronous
    /// replication (a front end may then answer it inline, without a task of its own).
    #[must_use]
    pub fn answers_at_append(&self) -> bool {
        matches!(self.engine.store().config().flush, FlushMode::Async { .. }) && !matches!(self.replication.mode, Mode::Sync { .. })
    }
}

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a broker reports of itself to name servers and in cluster views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    pub version: String,
    pub started_ms: u64,
    pub log_end_offset: u64,
    /// Whole segment files, from the oldest kept to the active one.
    pub log_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
}

impl Service {
    /// This broker's liveness, for a broker started at `started_ms`.
    #[must_use]
    pub fn liveness(&self, started_ms: u64) -> Liveness {
        let store = self.engine.store();
        let seg = store.segment_bytes();
        let (min, end) = (store.min_offset(), store.end_offset());
        let disk = wasmq_store::disk_space(&store.config().dir).ok();
        Liveness {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms,
            log_end_offset: end,
            log_bytes: (end / seg - min / seg + 1) * seg,
            disk_total_bytes: disk.map_or(0, |d| d.total_bytes),
            disk_used_bytes: disk.map_or(0, |d| d.used_bytes),
        }
    }
}
