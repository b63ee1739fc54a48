//! Master/slave replication of a broker set, over the broker protocol (TLS).
//!
//! A slave (broker id ≥ 1) follows its master: it asks for the master's log from its own end
//! (`ReplicaFetch`; the position is also its acknowledgement), appends the bytes as they are
//! (`Store::append_raw`, which verifies every record and builds the slave's consume queues and
//! index), and exchanges topics and consumer offsets every second (`ReplicaMeta`). It takes no
//! writes. The master answers fetches — waiting up to the request's `wait_ms` for new bytes —
//! and, in `sync` mode, holds a send's answer until enough slaves hold it (or says why not).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;
use wasmq_protocol::{
    ErrorCode, ReadFrom, ReplicaFetchRequest, ReplicaFetchResponse, ReplicaMetaRequest, ReplicaMetaResponse, Request, Response, SendStatus,
};

use wasmq_admin_types::SlaveStatus;

use crate::wire::WireError;

/// Most bytes one fetch answer carries.
pub const FETCH_BYTES_MAX: u32 = 4 << 20;
/// How long a caught-up slave's fetch waits at the master for new bytes.
const FETCH_WAIT_MS: u32 = 500;
/// A slave this far behind is not waited for by synchronous sends (as RocketMQ's
/// `haMaxGapNotInSync`).
const IN_SYNC_GAP_MAX: u64 = 256 << 20;
/// How often a slave exchanges topics and offsets with its master.
const META_INTERVAL: Duration = Duration::from_secs(1);
/// Most slaves one master serves (and remembers).
pub const SLAVES_MAX: usize = 16;
/// Pause before a slave reconnects to its master.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// How a broker set acknowledges sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// After the local append (and local flush, under sync flush).
    Async,
    /// Also only once `replicas` slaves hold the bytes, waiting at most `timeout`.
    Sync { replicas: u32, timeout: Duration },
}

/// This broker's place in its broker set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    /// Follows the master at this protocol address, trusting `peer_ca`.
    Slave {
        master: String,
        peer_ca: PathBuf,
    },
}

/// What the master knows of one slave.
#[derive(Debug, Clone)]
struct SlaveState {
    admin_addr: String,
    acked: u64,
    last_seen: Instant,
    /// When the slave last held everything the master had.
    caught_up: Instant,
}

/// What a slave knows of its master.
#[derive(Debug, Clone, Default)]
pub struct MasterLink {
    pub connected: bool,
    pub master_end: u64,
    pub last_contact: Option<Instant>,
    pub error: Option<String>,
}

/// The replication state of this broker.
#[derive(Debug)]
pub struct Replication {
    pub broker_name: String,
    pub broker_id: u32,
    pub role: Role,
    pub mode: Mode,
    /// Consumers reading this far (bytes of log) behind the master's end are sent to a slave,
    /// and back once within half of it; 0: never.
    pub read_behind_bytes: u64,
    /// Notified after every append to the local log (slaves' fetches wait on it).
    appended: Arc<Notify>,
    /// Notified when a slave acknowledges more (synchronous sends wait on it).
    acked: Notify,
    slaves: Mutex<BTreeMap<u32, SlaveState>>,
    link: Mutex<MasterLink>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replication {
    /// Sets up replication for `engine`'s store: the append hook, and on a slave the refusal
    /// of writes.
    pub fn new(engine: &Engine, broker_name: &str, broker_id: u32, role: Role, mode: Mode, read_behind_bytes: u64) -> Arc<Self> {
        let appended = Arc::new(Notify::new());
        let hook = Arc::clone(&appended);
        engine.store().on_append(move |_| hook.notify_waiters());
        if let Role::Slave { master, .. } = &role {
            engine.set_read_only(format!(
                "broker {broker_name} id {broker_id} is a slave and takes no writes; send to its master at {master}"
            ));
        }
        Arc::new(Self {
            broker_name: broker_name.to_owned(),
            broker_id,
            role,
            mode,
            read_behind_bytes,
            appended,
            acked: Notify::new(),
            slaves: Mutex::new(BTreeMap::new()),
            link: Mutex::new(MasterLink::default()),
        })
    }

    pub fn is_slave(&self) -> bool {
        matches!(self.role, Role::Slave { .. })
    }

    /// Master: answers a slave's fetch, recording its position as its acknowledgement.
    ///
    /// # Errors
    /// Not a master, another broker set, a slave whose position the master cannot serve.
    pub async fn fetch(&self, engine: &Engine, req: ReplicaFetchRequest, cancel: &CancellationToken) -> Result<Response, WireError> {
        if self.is_slave() {
            return Err(WireError::new(ErrorCode::NotMaster, "this broker is a slave; fetch from the master"));
        }
        if req.broker_name != self.broker_name || req.broker_id == 0 {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("this is the master of {}; a slave of {} id {} cannot follow it", self.broker_name, req.broker_name, req.broker_id),
            ));
        }
        let store = engine.store();
        let end = store.end_offset();
        if req.from > end {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("the slave's log ends at {} past the master's end {end}: the two have diverged", req.from),
            ));
        }
        self.record_ack(req.broker_id, req.from, &req.admin_addr, end)?;
        let min = store.min_offset();
        let mut from = req.from;
        if from < min {
            if from != 0 {
                return Err(WireError::new(
                    ErrorCode::OffsetTrimmed,
                    format!(
                        "the slave needs log offset {from}, deleted here (the log starts at {min}); empty the slave's store to start over"
                    ),
                ));
            }
            // An empty slave starts from the master's oldest segment.
            from = min;
        }
        if from == end {
            let wait = Duration::from_millis(u64::from(req.wait_ms.min(FETCH_WAIT_MS * 4)));
            let notified = self.appended.notified();
            if store.end_offset() == from {
                tokio::select! {
                    _ = tokio::time::timeout(wait, notified) => {}
                    () = cancel.cancelled() => {}
                }
            }
        }
        let chunk = store.read_raw(from, req.max_bytes.clamp(1, FETCH_BYTES_MAX) as usize).map_err(|e| crate::wire::read_error(&e))?;
        Ok(Response::ReplicaFetch(ReplicaFetchResponse {
            start_offset: chunk.start_offset,
            master_end: store.end_offset(),
            segment_bytes: store.segment_bytes(),
            bytes: chunk.bytes,
        }))
    }

    fn record_ack(&self, broker_id: u32, acked: u64, admin_addr: &str, end: u64) -> Result<(), WireError> {
        let now = Instant::now();
        let mut slaves = lock(&self.slaves);
        if slaves.len() >= SLAVES_MAX && !slaves.contains_key(&broker_id) {
            return Err(WireError::new(
                ErrorCode::InvalidRequest,
                format!("this master already serves {SLAVES_MAX} slaves; broker id {broker_id} cannot join"),
            ));
        }
        let s = slaves.entry(broker_id).or_insert_with(|| {
            tracing::info!(broker_id, admin_addr, "slave connected");
            SlaveState { admin_addr: admin_addr.to_owned(), acked, last_seen: now, caught_up: now }
        });
        s.acked = s.acked.max(acked);
        s.last_seen = now;
        admin_addr.clone_into(&mut s.admin_addr);
        if acked >= end {
            s.caught_up = now;
        }
        drop(slaves);
        self.acked.notify_waiters();
        Ok(())
    }

    /// Master: takes a slave's local offset commits, answers with topics and offsets.
    ///
    /// # Errors
    /// Not a master; bad JSON.
    pub fn meta(&self, engine: &Engine, req: &ReplicaMetaRequest) -> Result<Response, WireError> {
        if self.is_slave() {
            return Err(WireError::new(ErrorCode::NotMaster, "this broker is a slave"));
        }
        engine.merge_offsets(&req.local_offsets_json).map_err(|e| crate::wire::engine_error(&e))?;
        Ok(Response::ReplicaMeta(ReplicaMetaResponse { topics_json: engine.topics_json(), offsets_json: engine.offsets_json() }))
    }

    /// Master, sync mode: waits until enough slaves hold everything below `end_offset`.
    pub async fn replicated(&self, end_offset: u64) -> SendStatus {
        let Mode::Sync { replicas, timeout } = self.mode else { return SendStatus::Ok };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            let (live, holding) = {
                let slaves = lock(&self.slaves);
                let live =
                    slaves.values().filter(|s| s.last_seen.elapsed() < timeout && end_offset.saturating_sub(s.acked) < IN_SYNC_GAP_MAX);
                let live: Vec<&SlaveState> = live.collect();
                (live.len() as u32, live.iter().filter(|s| s.acked >= end_offset).count() as u32)
            };
            if holding >= replicas {
                return SendStatus::Ok;
            }
            if live < replicas {
                return SendStatus::SlaveNotAvailable;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return SendStatus::FlushSlaveTimeout;
            }
        }
    }

    /// Where a consumer whose pull starts at `first_log_offset` (none: nothing to read) should
    /// read next, as RocketMQ's `suggestPullingFromSlave`: a master sends one reading old data
    /// (more than `read_behind_bytes` behind the end) to an in-sync slave, sparing its page
    /// cache and disk for the producers; a slave sends one that has caught up (within half of
    /// it) back, if its master is there.
    pub fn suggest(&self, end: u64, first_log_offset: Option<u64>) -> ReadFrom {
        let behind = first_log_offset.map_or(0, |o| end.saturating_sub(o));
        if self.is_slave() {
            let near = self.read_behind_bytes == 0 || behind < self.read_behind_bytes / 2;
            return if near && lock(&self.link).connected { ReadFrom::Master } else { ReadFrom::Here };
        }
        if self.read_behind_bytes == 0 || behind <= self.read_behind_bytes {
            return ReadFrom::Here;
        }
        let live_within = Duration::from_millis(u64::from(FETCH_WAIT_MS) * 3);
        let in_sync =
            lock(&self.slaves).values().any(|s| s.last_seen.elapsed() < live_within && first_log_offset.is_some_and(|o| s.acked > o));
        if in_sync { ReadFrom::Slave } else { ReadFrom::Here }
    }

    /// Master: each slave's position, lag and liveness.
    pub fn slaves(&self, end: u64) -> Vec<SlaveStatus> {
        // A caught-up slave asks at least every FETCH_WAIT_MS; three of those without a word
        // and it is reported down.
        let live_within = Duration::from_millis(u64::from(FETCH_WAIT_MS) * 3);
        lock(&self.slaves)
            .iter()
            .map(|(&broker_id, s)| SlaveStatus {
                broker_id,
                admin_addr: s.admin_addr.clone(),
                acked_offset: s.acked,
                lag_bytes: end.saturating_sub(s.acked),
                lag_ms: if s.acked >= end { 0 } else { s.caught_up.elapsed().as_millis() as u64 },
                connected: s.last_seen.elapsed() < live_within,
                last_seen_ms_ago: s.last_seen.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// Slave: the link to the master.
    pub fn link(&self) -> MasterLink {
        lock(&self.link).clone()
    }

    /// Slave: follows the master until `stop`, reconnecting after failures.
    pub async fn follow(self: Arc<Self>, engine: Arc<Engine>, admin_addr: String, stop: CancellationToken) {
        let Role::Slave { master, peer_ca } = self.role.clone() else { return };
        let mut last_error = String::new();
        loop {
            let result = tokio::select! {
                r = self.follow_once(&engine, &master, &peer_ca, &admin_addr) => r,
                () = stop.cancelled() => return,
            };
            let e = result.err().unwrap_or_default();
            {
                let mut link = lock(&self.link);
                link.connected = false;
                link.error = Some(e.clone());
            }
            if e != last_error {
                tracing::warn!(master, error = %e, "replication from the master stopped; retrying");
                last_error = e;
            }
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn follow_once(&self, engine: &Arc<Engine>, master: &str, peer_ca: &std::path::Path, admin_addr: &str) -> Result<(), String> {
        let mut options = wasmq_client::ConnectionOptions::new(master, peer_ca);
        options.client_id = format!("{}-{}", self.broker_name, self.broker_id);
        let conn = wasmq_client::Connection::connect(options).await.map_err(|e| e.to_string())?;
        let store = engine.store();
        let mut last_meta = Instant::now() - META_INTERVAL;
        loop {
            if last_meta.elapsed() >= META_INTERVAL {
                last_meta = Instant::now();
                self.exchange_meta(engine, &conn).await?;
            }
            let from = store.end_offset();
            let req = Request::ReplicaFetch(ReplicaFetchRequest {
                broker_name: self.broker_name.clone(),
                broker_id: self.broker_id,
                from,
                max_bytes: FETCH_BYTES_MAX,
                wait_ms: FETCH_WAIT_MS,
                admin_addr: admin_addr.to_owned(),
            });
            let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS)) + Duration::from_secs(10);
            let Response::ReplicaFetch(r) = conn.call_with_timeout(&req, timeout).await.map_err(|e| e.to_string())? else {
                return Err("ReplicaFetch answered with another response".into());
            };
            if r.segment_bytes != store.segment_bytes() {
                return Err(format!(
                    "the master's segments are {} bytes, this slave's {}: set the same segment_bytes",
                    r.segment_bytes,
                    store.segment_bytes()
                ));
            }
            if !r.bytes.is_empty() {
                let (s, at, bytes) = (Arc::clone(store), r.start_offset, r.bytes);
                tokio::task::spawn_blocking(move || s.append_raw(at, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("applying the master's log at {at}: {e}"))?;
                engine.wake_all();
            }
            let mut link = lock(&self.link);
            link.connected = true;
            link.master_end = r.master_end;
            link.last_contact = Some(Instant::now());
            link.error = None;
        }
    }

    async fn exchange_meta(&self, engine: &Engine, conn: &wasmq_client::Connection) -> Result<(), String> {
        let handed = engine.local_commits();
        let req = Request::ReplicaMeta(ReplicaMetaRequest {
            broker_id: self.broker_id,
            local_offsets_json: serde_json::to_string(&handed).map_err(|e| e.to_string())?,
        });
        let Response::ReplicaMeta(m) = conn.call(&req).await.map_err(|e| e.to_string())? else {
            return Err("ReplicaMeta answered with another response".into());
        };
        engine.adopt_topics(&m.topics_json).map_err(|e| e.to_string())?;
        engine.adopt_offsets(&m.offsets_json, &handed).map_err(|e| e.to_string())?;
        Ok(())
    }
}
