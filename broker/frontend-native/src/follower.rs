//! A slave's follower of its master, over the native protocol: `ReplicaFetch` from its own end
//! (the position is also its acknowledgement), `Store::append_raw`, and `ReplicaMeta` every
//! second to exchange topics and consumer offsets and take the master's users and policies
//! (logged in as `replication_user` once the master has users). The state it updates is the service's
//! [`Replication`]. Each answer carries the master's epochs: the slave takes them as its log
//! reaches them, and when they show that its log has parted from the master's (it holds a tail
//! the master never had: it was master itself, or followed one that was replaced) it stops and
//! says where its log must be cut.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;
use wasmq_net::{Connection, ConnectionOptions};
use wasmq_protocol::{ReplicaFetchRequest, ReplicaMetaRequest, Request, Response};
use wasmq_service::{FETCH_BYTES_MAX, FETCH_WAIT_MS, Replication, Role, Security};
use wasmq_store::{Epochs, diverge_at};

/// How often a slave exchanges topics and offsets with its master.
const META_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before a slave reconnects to its master.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How much longer than its wait a fetch may take before the link counts as broken.
const FETCH_GRACE: Duration = Duration::from_secs(10);

/// Why following stopped.
enum Stopped {
    /// The log parted from the master's: cut it here, then follow.
    Diverged {
        cut: u64,
    },
    Failed(String),
}

impl From<String> for Stopped {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

/// Follows the master until `stop`, reconnecting after failures (a master does nothing here).
/// Returns where this broker's log must be cut when it has parted from the master's (it
/// follows no further), `None` when stopped.
pub async fn follow(
    replication: Arc<Replication>,
    engine: Arc<Engine>,
    security: Arc<Security>,
    login: Option<wasmq_protocol::Credentials>,
    admin_addr: String,
    stop: CancellationToken,
) -> Option<u64> {
    let Role::Slave { master, peer_ca } = replication.role.clone() else { return None };
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            r = follow_once(&replication, &engine, &security, login.as_ref(), (&master, &peer_ca), &admin_addr) => r,
            () = stop.cancelled() => return None,
        };
        let e = match result {
            Err(Stopped::Diverged { cut }) => {
                let why = format!("this log parted from the master's at {cut}: it must be cut there");
                tracing::warn!(master, cut, end = engine.store().end_offset(), "{why}");
                replication.link_down(why);
                return Some(cut);
            }
            Err(Stopped::Failed(e)) => e,
            Ok(()) => String::new(),
        };
        replication.link_down(e.clone());
        if e != last_error {
            tracing::warn!(master, error = %e, "replication from the master stopped; retrying");
            last_error = e;
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            () = stop.cancelled() => return None,
        }
    }
}

async fn follow_once(
    r: &Replication,
    engine: &Arc<Engine>,
    security: &Security,
    login: Option<&wasmq_protocol::Credentials>,
    (master, peer_ca): (&str, &Path),
    admin_addr: &str,
) -> Result<(), Stopped> {
    let mut options = ConnectionOptions::new(master, peer_ca);
    options.client_id = format!("{}-{}", r.broker_name, r.broker_id);
    // A master with users takes a slave that logs in as one with admin on the cluster.
    options.credentials = login.cloned();
    let conn = Connection::connect(options).await.map_err(|e| e.to_string())?;
    let store = engine.store();
    let mut last_meta = Instant::now().checked_sub(META_INTERVAL).unwrap_or_else(Instant::now);
    loop {
        if last_meta.elapsed() >= META_INTERVAL {
            last_meta = Instant::now();
            exchange_meta(r, engine, security, &conn).await?;
        }
        let from = store.end_offset();
        let req = Request::ReplicaFetch(ReplicaFetchRequest {
            broker_name: r.broker_name.clone(),
            broker_id: r.broker_id,
            from,
            max_bytes: FETCH_BYTES_MAX,
            wait_ms: FETCH_WAIT_MS,
            admin_addr: admin_addr.to_owned(),
            epoch: store.epochs().latest(),
        });
        let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS)) + FETCH_GRACE;
        let Response::ReplicaFetch(f) = conn.call_with_timeout(&req, timeout).await.map_err(|e| e.to_string())? else {
            return Err(Stopped::Failed("ReplicaFetch answered with another response".into()));
        };
        if f.segment_bytes != store.segment_bytes() {
            return Err(Stopped::Failed(format!(
                "the master's segments are {} bytes, this slave's {}: set the same segment_bytes",
                f.segment_bytes,
                store.segment_bytes()
            )));
        }
        let epochs = Epochs::from_pairs(&f.epochs).map_err(|e| format!("the master's epochs: {e}"))?;
        let cut = diverge_at(&store.epochs(), from, &epochs, f.master_end);
        if cut < from {
            return Err(Stopped::Diverged { cut });
        }
        if !f.bytes.is_empty() {
            let (s, at, bytes) = (Arc::clone(store), f.start_offset, f.bytes);
            tokio::task::spawn_blocking(move || s.append_raw(at, &bytes))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("applying the master's log at {at}: {e}"))?;
            engine.wake_all();
        }
        store.adopt_epochs(&epochs).map_err(|e| format!("taking the master's epochs: {e}"))?;
        r.link_up(f.master_end);
    }
}

async fn exchange_meta(r: &Replication, engine: &Engine, security: &Security, conn: &Connection) -> Result<(), String> {
    let handed = engine.local_commits();
    let req = Request::ReplicaMeta(ReplicaMetaRequest {
        broker_id: r.broker_id,
        local_offsets_json: serde_json::to_string(&handed).map_err(|e| e.to_string())?,
    });
    let Response::ReplicaMeta(m) = conn.call(&req).await.map_err(|e| e.to_string())? else {
        return Err("ReplicaMeta answered with another response".into());
    };
    engine.adopt_topics(&m.topics_json).map_err(|e| e.to_string())?;
    engine.adopt_offsets(&m.offsets_json, &handed).map_err(|e| e.to_string())?;
    engine.adopt_group_settings(&m.groups_json).map_err(|e| e.to_string())?;
    // The master's users and policies, so that clients reading here log in as there (and a
    // slave elected master keeps them).
    if !m.security_json.is_empty() && security.adopt(&m.security_json).map_err(|e| e.to_string())? {
        tracing::info!(users = security.users().len(), "took the master's users and policies");
    }
    Ok(())
}
