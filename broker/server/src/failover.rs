//! A broker whose set has a failover controller (`controller` setting): its role comes from the
//! controller — asked at start, then heard in every heartbeat's answer — and a change of role
//! (elected master, replaced as master, a new master to follow, a log to cut before following)
//! restarts the broker's services in process, on the same ports, from the store's files: the
//! store's and the engine's recovery are the paths that rebuild what a role needs (held
//! messages, receive state, offsets), and they are the tested ones.
//!
//! A master that has not had a heartbeat answered for nearly the controller's master timeout
//! stops taking writes until it has one again: by then the controller may have elected another.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmq_controller_api::rpc::{Answer, Call, Heartbeat};
use wasmq_controller_api::{BrokerSet, Client};
use wasmq_engine::Engine;
use wasmq_service::{Replication, Role};

/// How often a broker tells the controller it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);
/// A master stops taking writes this long before the controller's master timeout runs out,
/// counted from when it sent the last heartbeat the controller answered (covers a heartbeat
/// on its way and the two clocks' rates).
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// How long a broker starting up waits between attempts to learn its role.
const ROLE_RETRY: Duration = Duration::from_millis(300);
/// A broker that cannot learn its role says so this often.
const ROLE_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What the controller told a starting broker.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub role: Role,
    /// Its set as the controller holds it.
    pub set: BrokerSet,
    /// When the answered heartbeat was sent, and the master lease it gives from then.
    pub lease: (Instant, Duration),
}

/// The lease a heartbeat answer with `master_timeout_ms` gives a master.
fn lease(master_timeout_ms: u64) -> Duration {
    Duration::from_millis(master_timeout_ms).saturating_sub(LEASE_MARGIN)
}

/// What a start (or restart) of the broker's services is to be.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The role; `None`: ask the controller (after opening the store).
    pub role: Option<Role>,
    /// Cut the store's log here while opening it.
    pub cut: Option<u64>,
}

/// A running broker's request to be restarted with another plan (the first request wins).
#[derive(Debug)]
pub struct Restart {
    next: Mutex<Option<Plan>>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Restart {
    /// Requests go to the services stopped by `stop`.
    pub fn new(stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self { next: Mutex::new(None), stop })
    }

    /// Stops the services, to start them again as `plan` says.
    pub fn request(&self, plan: Plan, why: &str) {
        let mut next = lock(&self.next);
        if next.is_none() {
            tracing::warn!(why, role = ?plan.role, cut = ?plan.cut, "restarting the broker's services for a new role");
            *next = Some(plan);
            self.stop.cancel();
        }
    }

    /// The plan asked for, if any.
    pub fn take(&self) -> Option<Plan> {
        lock(&self.next).take()
    }
}

/// This broker as the controller knows it.
#[derive(Debug, Clone)]
pub struct Me {
    /// Its broker set (broker name).
    pub set: String,
    pub id: u32,
    /// Its native-protocol address.
    pub addr: String,
    /// The CA of the other brokers (for following a master).
    pub peer_ca: PathBuf,
}

/// The role the controller's `set` gives this broker, and the epoch it is to begin (elected
/// master of an epoch newer than its log's).
///
/// # Errors
/// The set has no master, its master is not a member, or its epoch is behind this log's (a
/// controller that lost its state: acting on it could make two masters).
pub fn role_in(set: &BrokerSet, me: &Me, my_epoch: u64) -> Result<(Role, Option<u64>), String> {
    if set.epoch < my_epoch {
        return Err(format!("the controller says epoch {} for {}, this log has seen epoch {my_epoch}", set.epoch, me.set));
    }
    match set.master {
        None => Err(format!("the controller has no master for {}", me.set)),
        Some(m) if m == me.id => Ok((Role::Master, (set.epoch > my_epoch).then_some(set.epoch))),
        Some(m) => match set.members.get(&m) {
            Some(addr) => Ok((Role::Slave { master: addr.clone(), peer_ca: me.peer_ca.clone() }, None)),
            None => Err(format!("the controller's master {m} of {} is not a member", me.set)),
        },
    }
}

fn heartbeat(me: &Me, store: &wasmq_store::Store, in_sync: Option<BTreeSet<u32>>) -> Call {
    Call::Heartbeat(Heartbeat {
        set: me.set.clone(),
        id: me.id,
        addr: me.addr.clone(),
        epoch: store.epochs().latest(),
        log_end: store.end_offset(),
        in_sync,
    })
}

/// Asks the controller until it answers with this broker's role and its set as the controller
/// holds it (`None` if `stop` comes first). Elected master of an epoch newer than the log's, the
/// broker begins that epoch at its log's end before it takes a write.
///
/// # Errors
/// The epoch could not be recorded.
pub async fn initial_role(
    client: &Client,
    me: &Me,
    store: &wasmq_store::Store,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Assigned>> {
    let mut said = Instant::now().checked_sub(ROLE_WAIT_LOG_INTERVAL).unwrap_or_else(Instant::now);
    loop {
        let sent = Instant::now();
        let why = match client.call(&heartbeat(me, store, None)).await {
            Ok(Answer::Beat { set, master_timeout_ms }) => match role_in(&set, me, store.epochs().latest()) {
                Ok((role, begin)) => {
                    if let Some(epoch) = begin {
                        let at = store.begin_epoch(epoch)?;
                        tracing::warn!(epoch, at, "elected master: epoch begun");
                    }
                    tracing::info!(?role, epoch = set.epoch, "role from the controller");
                    return Ok(Some(Assigned { role, set, lease: (sent, lease(master_timeout_ms)) }));
                }
                Err(why) => why,
            },
            Ok(other) => format!("the controller answered {other:?}"),
            Err(e) => e.to_string(),
        };
        if said.elapsed() >= ROLE_WAIT_LOG_INTERVAL {
            said = Instant::now();
            tracing::warn!(controller = ?client.addrs(), %why, "waiting for the controller to give this broker its role");
        }
        tokio::select! {
            () = tokio::time::sleep(ROLE_RETRY) => {}
            () = stop.cancelled() => return Ok(None),
        }
    }
}

/// Sends heartbeats until `stop`. An answer that changes this broker's role asks `restart` for
/// a restart (a master replaced stops taking writes at once); a master whose lease ran out
/// (no answer for the controller's master timeout less [`LEASE_MARGIN`], counted from when the
/// last answered heartbeat was sent; the first from `first_lease`) takes no writes until an
/// answer confirms it.
#[allow(clippy::too_many_arguments)]
pub async fn heartbeats(
    client: Arc<Client>,
    me: Me,
    role: Role,
    first_lease: Option<(Instant, Duration)>,
    engine: Arc<Engine>,
    replication: Arc<Replication>,
    restart: Arc<Restart>,
    stop: CancellationToken,
) {
    let store = Arc::clone(engine.store());
    let master = role == Role::Master;
    // When the last answered heartbeat was sent, and the lease it gave.
    let mut lease: Option<(Instant, Duration)> = if master { Some(first_lease.unwrap_or((Instant::now(), Duration::ZERO))) } else { None };
    if let Some((from, ttl)) = lease {
        replication.extend_lease(from + ttl);
    }
    let mut fenced = false;
    let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let sent = Instant::now();
        let in_sync = master.then(|| replication.in_sync(store.end_offset()));
        // A call to an unreachable controller hangs until its timeouts (a partition drops
        // packets silently): the lease runs out meanwhile, and the master stops taking writes
        // then, not when the call gives up.
        let beat = heartbeat(&me, &store, in_sync);
        let call = client.call(&beat);
        tokio::pin!(call);
        let answer = loop {
            let fence_at = lease.filter(|_| !fenced).map(|(from, ttl)| tokio::time::Instant::from_std(from + ttl));
            tokio::select! {
                a = &mut call => break a,
                () = tokio::time::sleep_until(fence_at.unwrap_or_else(tokio::time::Instant::now)), if fence_at.is_some() => {
                    fenced = fence(&engine, &me, lease);
                }
                () = stop.cancelled() => return,
            }
        };
        match answer {
            Ok(Answer::Beat { set, master_timeout_ms }) => match role_in(&set, &me, store.epochs().latest()) {
                Ok((r, None)) if r == role => {
                    if master {
                        replication.set_in_sync_committed(set.in_sync.clone());
                        lease = Some((sent, self::lease(master_timeout_ms)));
                        replication.extend_lease(sent + self::lease(master_timeout_ms));
                        if fenced {
                            fenced = false;
                            engine.clear_read_only();
                            tracing::warn!(epoch = set.epoch, "the controller confirms this broker as master: taking writes again");
                        }
                    }
                }
                Ok((r, _)) => {
                    if master {
                        engine.set_read_only(format!(
                            "broker {} id {} is no longer the master of its set (epoch {}): send to the new master",
                            me.set, me.id, set.epoch
                        ));
                    }
                    let why = format!("the controller's epoch {} names master {:?}", set.epoch, set.master);
                    restart.request(Plan { role: (r != Role::Master).then_some(r), cut: None }, &why);
                    return;
                }
                Err(why) => tracing::warn!(%why, "the controller's answer gives this broker no role"),
            },
            Ok(other) => tracing::warn!(answer = ?other, "the controller answered a heartbeat with something else"),
            Err(e) => tracing::debug!(error = %e, "heartbeat to the controller failed"),
        }
        if !fenced {
            fenced = fence(&engine, &me, lease);
        }
    }
}

/// Stops writes if `lease` (when the last answered heartbeat was sent, and the lease it gave)
/// ran out; whether it did.
fn fence(engine: &Engine, me: &Me, lease: Option<(Instant, Duration)>) -> bool {
    let Some((from, ttl)) = lease else { return false };
    if from.elapsed() < ttl {
        return false;
    }
    engine.set_read_only(format!(
        "broker {} id {} has not heard from the controller for {} ms: it takes no writes until it does (another master may have been elected)",
        me.set,
        me.id,
        from.elapsed().as_millis()
    ));
    tracing::warn!(since_ms = from.elapsed().as_millis() as u64, "master lease ran out: writes refused");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: u32) -> Me {
        Me { set: "a".into(), id, addr: format!("h{id}:7070"), peer_ca: "ca.pem".into() }
    }

    fn set(master: Option<u32>, epoch: u64) -> BrokerSet {
        BrokerSet { members: (0..3).map(|id| (id, format!("h{id}:7070"))).collect(), master, epoch, in_sync: BTreeSet::from([0]) }
    }

    #[test]
    fn the_role_follows_the_controllers_master_and_epoch() {
        assert_eq!(role_in(&set(Some(1), 3), &me(1), 2).unwrap(), (Role::Master, Some(3)), "elected: begin epoch 3");
        assert_eq!(role_in(&set(Some(1), 3), &me(1), 3).unwrap(), (Role::Master, None), "master already in epoch 3");
        assert_eq!(
            role_in(&set(Some(2), 3), &me(1), 2).unwrap(),
            (Role::Slave { master: "h2:7070".into(), peer_ca: "ca.pem".into() }, None)
        );
        assert!(role_in(&set(Some(1), 2), &me(1), 3).unwrap_err().contains("this log has seen epoch 3"));
        assert!(role_in(&set(None, 1), &me(1), 0).unwrap_err().contains("no master"));
        assert!(role_in(&set(Some(7), 1), &me(1), 0).unwrap_err().contains("not a member"));
    }
}
