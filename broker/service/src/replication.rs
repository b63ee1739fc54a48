//! Master/slave replication of a broker set: the state both sides keep, and the master's side.
//!
//! A slave (broker id ≥ 1) follows its master (the native front end's follower): it asks for
//! the master's log from its own end (the position is also its acknowledgement), appends the
//! bytes as they are (`Store::append_raw`, which verifies every record and builds the slave's
//! consume queues and index), and exchanges topics and consumer offsets every second. It takes
//! no writes. The master answers fetches ([`Replication::fetch`]) — waiting up to the request's
//! wait for new bytes — and, in `sync` mode, holds a send's answer until enough slaves hold it
//! (or says why not).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;

use wasmq_admin_types::SlaveStatus;

use crate::{Guarantee, ReadFrom, ServiceError};

/// Most bytes one fetch answer carries.
pub const FETCH_BYTES_MAX: u32 = 4 << 20;
/// How long a caught-up slave's fetch waits at the master for new bytes.
pub const FETCH_WAIT_MS: u32 = 500;
/// A slave this far behind is not waited for by synchronous sends (as RocketMQ's
/// `haMaxGapNotInSync`).
const IN_SYNC_GAP_MAX: u64 = 256 << 20;
/// Most slaves one master serves (and remembers).
pub const SLAVES_MAX: usize = 16;
/// A slave that held everything the master had within this long, and is connected, is in
/// sync (what a master reports to the failover controller).
pub const IN_SYNC_CAUGHT_UP_WITHIN: Duration = Duration::from_secs(3);

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
    /// When the slave last held everything the master had (never, since it connected: `None`).
    caught_up: Option<Instant>,
    /// When it connected (its lag is counted from then until it first catches up).
    since: Instant,
}

/// What a slave knows of its master.
#[derive(Debug, Clone, Default)]
pub struct MasterLink {
    pub connected: bool,
    pub master_end: u64,
    pub last_contact: Option<Instant>,
    pub error: Option<String>,
}

/// What a master hands a slave besides the log: its registries, as JSON.
#[derive(Debug, Clone)]
pub struct ReplicaMeta {
    pub topics_json: String,
    pub offsets_json: String,
    pub groups_json: String,
}

/// A fetch's answer: the master's log from `start_offset`.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub start_offset: u64,
    pub master_end: u64,
    pub segment_bytes: u64,
    /// The master's epochs: (epoch, start offset), oldest first.
    pub epochs: Vec<(u64, u64)>,
    pub bytes: Bytes,
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
    /// Under a failover controller, the in-sync set it holds (see `set_in_sync_committed`).
    in_sync_committed: Mutex<Option<BTreeSet<u32>>>,
    /// Under a failover controller, until when this master may acknowledge writes (see
    /// `extend_lease`): nanoseconds after `created`, 0 for no lease. An atomic, as every write's
    /// answer reads it.
    lease_until_ns: AtomicU64,
    created: Instant,
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
            engine.set_follower();
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
            in_sync_committed: Mutex::new(None),
            lease_until_ns: AtomicU64::new(0),
            created: Instant::now(),
        })
    }

    pub fn is_slave(&self) -> bool {
        matches!(self.role, Role::Slave { .. })
    }

    /// Master: answers a slave's fetch, recording its position as its acknowledgement, with the
    /// master's epochs (the slave compares them with its own to find where their logs part).
    ///
    /// # Errors
    /// Not a master; a slave that knows a newer master epoch than this master's (this broker
    /// has been replaced); another broker set; a slave whose position the master cannot serve.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        engine: &Engine,
        broker_name: &str,
        broker_id: u32,
        admin_addr: &str,
        from: u64,
        max_bytes: u32,
        wait_ms: u32,
        slave_epoch: u64,
        cancel: &CancellationToken,
    ) -> Result<Fetched, ServiceError> {
        if self.is_slave() {
            return Err(ServiceError::NotMaster("this broker is a slave; fetch from the master".into()));
        }
        let epochs = engine.store().epochs();
        if slave_epoch > epochs.latest() {
            return Err(ServiceError::NotMaster(format!(
                "slave {broker_id} knows master epoch {slave_epoch}, this broker's is {}: it is no longer the master",
                epochs.latest()
            )));
        }
        // Any other member of the set may follow it (with a controller, any id may be a slave).
        if broker_name != self.broker_name || broker_id == self.broker_id {
            return Err(ServiceError::Invalid(format!(
                "this is broker {} of {}; broker {broker_id} of {broker_name} cannot follow it",
                self.broker_id, self.broker_name
            )));
        }
        let store = engine.store();
        let end = store.end_offset();
        if !epochs.list().is_empty() && from > epochs.end_of(slave_epoch, end) {
            // Past where this log holds the slave's latest epoch: the slave has a tail this
            // master never had. No bytes: it finds where to cut from the epochs.
            return Ok(Fetched {
                start_offset: from,
                master_end: end,
                segment_bytes: store.segment_bytes(),
                epochs: epochs.list().iter().map(|e| (e.epoch, e.start)).collect(),
                bytes: Bytes::new(),
            });
        }
        if from > end {
            return Err(ServiceError::Invalid(format!(
                "the slave's log ends at {from} past the master's end {end}: the two have diverged"
            )));
        }
        self.record_ack(broker_id, from, admin_addr, end)?;
        let min = store.min_offset();
        let mut from = from;
        if from < min {
            if from != 0 {
                return Err(ServiceError::OffsetTrimmed(format!(
                    "the slave needs log offset {from}, deleted here (the log starts at {min}); empty the slave's store to start over"
                )));
            }
            // An empty slave starts from the master's oldest segment.
            from = min;
        }
        if from == end {
            let wait = Duration::from_millis(u64::from(wait_ms.min(FETCH_WAIT_MS * 4)));
            let notified = self.appended.notified();
            if store.end_offset() == from {
                tokio::select! {
                    _ = tokio::time::timeout(wait, notified) => {}
                    () = cancel.cancelled() => {}
                }
            }
        }
        let chunk = store.read_raw(from, max_bytes.clamp(1, FETCH_BYTES_MAX) as usize)?;
        Ok(Fetched {
            start_offset: chunk.start_offset,
            master_end: store.end_offset(),
            segment_bytes: store.segment_bytes(),
            epochs: epochs.list().iter().map(|e| (e.epoch, e.start)).collect(),
            bytes: chunk.bytes,
        })
    }

    fn record_ack(&self, broker_id: u32, acked: u64, admin_addr: &str, end: u64) -> Result<(), ServiceError> {
        let now = Instant::now();
        let mut slaves = lock(&self.slaves);
        if slaves.len() >= SLAVES_MAX && !slaves.contains_key(&broker_id) {
            return Err(ServiceError::Invalid(format!(
                "this master already serves {SLAVES_MAX} slaves; broker id {broker_id} cannot join"
            )));
        }
        let s = slaves.entry(broker_id).or_insert_with(|| {
            tracing::info!(broker_id, admin_addr, "slave connected");
            SlaveState { admin_addr: admin_addr.to_owned(), acked, last_seen: now, caught_up: None, since: now }
        });
        s.acked = s.acked.max(acked);
        s.last_seen = now;
        admin_addr.clone_into(&mut s.admin_addr);
        if acked >= end {
            s.caught_up = Some(now);
        }
        drop(slaves);
        self.acked.notify_waiters();
        Ok(())
    }

    /// Master: takes a slave's local offset commits (JSON), answers with the topics, the
    /// offsets and the group settings (JSON).
    ///
    /// # Errors
    /// Not a master; bad JSON.
    pub fn meta(&self, engine: &Engine, local_offsets_json: &str) -> Result<ReplicaMeta, ServiceError> {
        if self.is_slave() {
            return Err(ServiceError::NotMaster("this broker is a slave".into()));
        }
        engine.merge_offsets(local_offsets_json)?;
        Ok(ReplicaMeta {
            topics_json: engine.topics_json(),
            offsets_json: engine.offsets_json(),
            groups_json: engine.group_settings_json(),
        })
    }

    /// Master, sync mode: waits until enough slaves hold everything below `end_offset` —
    /// under a failover controller, every member of its in-sync set.
    pub async fn replicated(&self, end_offset: u64) -> Guarantee {
        let Mode::Sync { replicas, timeout } = self.mode else { return Guarantee::Ok };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            // (The guard must not live into the body: it waits.)
            let committed = lock(&self.in_sync_committed).clone();
            if let Some(in_sync) = committed {
                let others: Vec<u32> = in_sync.into_iter().filter(|id| *id != self.broker_id).collect();
                if (others.len() as u32) < replicas {
                    return Guarantee::SlaveNotAvailable;
                }
                if others.iter().all(|id| lock(&self.slaves).get(id).is_some_and(|s| s.acked >= end_offset)) {
                    return Guarantee::Ok;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Guarantee::SlaveTimeout;
                }
                continue;
            }
            let (live, holding) = {
                let slaves = lock(&self.slaves);
                let live =
                    slaves.values().filter(|s| s.last_seen.elapsed() < timeout && end_offset.saturating_sub(s.acked) < IN_SYNC_GAP_MAX);
                let live: Vec<&SlaveState> = live.collect();
                (live.len() as u32, live.iter().filter(|s| s.acked >= end_offset).count() as u32)
            };
            if holding >= replicas {
                return Guarantee::Ok;
            }
            if live < replicas {
                return Guarantee::SlaveNotAvailable;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Guarantee::SlaveTimeout;
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
                lag_ms: if s.acked >= end { 0 } else { s.caught_up.unwrap_or(s.since).elapsed().as_millis() as u64 },
                connected: s.last_seen.elapsed() < live_within,
                last_seen_ms_ago: s.last_seen.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// Master: the members in sync with it, itself included: connected slaves that held
    /// everything it had within [`IN_SYNC_CAUGHT_UP_WITHIN`] (a slave that connected and has
    /// not caught up once is not, however recent).
    pub fn in_sync(&self, end: u64) -> BTreeSet<u32> {
        let live_within = Duration::from_millis(u64::from(FETCH_WAIT_MS) * 3);
        let mut set: BTreeSet<u32> = lock(&self.slaves)
            .iter()
            .filter(|(_, s)| {
                s.last_seen.elapsed() < live_within
                    && (s.acked >= end || s.caught_up.is_some_and(|t| t.elapsed() <= IN_SYNC_CAUGHT_UP_WITHIN))
            })
            .map(|(id, _)| *id)
            .collect();
        set.insert(self.broker_id);
        set
    }

    /// Master under a failover controller: the in-sync set the controller holds for this
    /// master's epoch. From then on a synchronous send waits for every member of it (not for
    /// any `replicas` slaves), so that whichever of them is elected next holds what was
    /// acknowledged; fewer members than `replicas` besides the master: `SlaveNotAvailable`.
    pub fn set_in_sync_committed(&self, in_sync: BTreeSet<u32>) {
        let mut committed = lock(&self.in_sync_committed);
        if committed.as_ref() != Some(&in_sync) {
            *committed = Some(in_sync);
            drop(committed);
            // Sends waiting for a member that left the set may be answered now.
            self.acked.notify_waiters();
        }
    }

    /// Master under a failover controller: it may acknowledge writes until `until` (the send
    /// time of the last heartbeat the controller answered, plus the controller's master timeout
    /// less a margin: before another master can have been elected). Never shortened.
    pub fn extend_lease(&self, until: Instant) {
        let ns = u64::try_from(until.saturating_duration_since(self.created).as_nanos()).unwrap_or(u64::MAX).max(1);
        self.lease_until_ns.fetch_max(ns, Ordering::Release);
    }

    /// How long ago this master's lease ran out, if it did (never without a controller).
    pub fn lease_expired(&self) -> Option<Duration> {
        let until = self.lease_until_ns.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (now > until).then(|| Duration::from_nanos(now - until))
    }

    /// Slave: the link to the master.
    pub fn link(&self) -> MasterLink {
        lock(&self.link).clone()
    }

    /// Slave: records a fetch answered by the master at `master_end`.
    pub fn link_up(&self, master_end: u64) {
        let mut link = lock(&self.link);
        link.connected = true;
        link.master_end = master_end;
        link.last_contact = Some(Instant::now());
        link.error = None;
    }

    /// Slave: records that following the master stopped, and why.
    pub fn link_down(&self, error: String) {
        let mut link = lock(&self.link);
        link.connected = false;
        link.error = Some(error);
    }
}
