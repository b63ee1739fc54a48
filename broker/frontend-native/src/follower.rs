//! A slave's follower of its master, over the native protocol: `ReplicaFetch` from its own end
//! (the position is also its acknowledgement), `Store::append_raw`, and `ReplicaMeta` every
//! second to exchange topics and consumer offsets. The state it updates is the service's
//! [`Replication`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmq_engine::Engine;
use wasmq_net::{Connection, ConnectionOptions};
use wasmq_protocol::{ReplicaFetchRequest, ReplicaMetaRequest, Request, Response};
use wasmq_service::{FETCH_BYTES_MAX, FETCH_WAIT_MS, Replication, Role};

/// How often a slave exchanges topics and offsets with its master.
const META_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before a slave reconnects to its master.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How much longer than its wait a fetch may take before the link counts as broken.
const FETCH_GRACE: Duration = Duration::from_secs(10);

/// Follows the master until `stop`, reconnecting after failures (a master does nothing here).
pub async fn follow(replication: Arc<Replication>, engine: Arc<Engine>, admin_addr: String, stop: CancellationToken) {
    let Role::Slave { master, peer_ca } = replication.role.clone() else { return };
    let mut last_error = String::new();
    loop {
        let result = tokio::select! {
            r = follow_once(&replication, &engine, &master, &peer_ca, &admin_addr) => r,
            () = stop.cancelled() => return,
        };
        let e = result.err().unwrap_or_default();
        replication.link_down(e.clone());
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

async fn follow_once(r: &Replication, engine: &Arc<Engine>, master: &str, peer_ca: &Path, admin_addr: &str) -> Result<(), String> {
    let mut options = ConnectionOptions::new(master, peer_ca);
    options.client_id = format!("{}-{}", r.broker_name, r.broker_id);
    let conn = Connection::connect(options).await.map_err(|e| e.to_string())?;
    let store = engine.store();
    let mut last_meta = Instant::now().checked_sub(META_INTERVAL).unwrap_or_else(Instant::now);
    loop {
        if last_meta.elapsed() >= META_INTERVAL {
            last_meta = Instant::now();
            exchange_meta(r, engine, &conn).await?;
        }
        let from = store.end_offset();
        let req = Request::ReplicaFetch(ReplicaFetchRequest {
            broker_name: r.broker_name.clone(),
            broker_id: r.broker_id,
            from,
            max_bytes: FETCH_BYTES_MAX,
            wait_ms: FETCH_WAIT_MS,
            admin_addr: admin_addr.to_owned(),
        });
        let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS)) + FETCH_GRACE;
        let Response::ReplicaFetch(f) = conn.call_with_timeout(&req, timeout).await.map_err(|e| e.to_string())? else {
            return Err("ReplicaFetch answered with another response".into());
        };
        if f.segment_bytes != store.segment_bytes() {
            return Err(format!(
                "the master's segments are {} bytes, this slave's {}: set the same segment_bytes",
                f.segment_bytes,
                store.segment_bytes()
            ));
        }
        if !f.bytes.is_empty() {
            let (s, at, bytes) = (Arc::clone(store), f.start_offset, f.bytes);
            tokio::task::spawn_blocking(move || s.append_raw(at, &bytes))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("applying the master's log at {at}: {e}"))?;
            engine.wake_all();
        }
        r.link_up(f.master_end);
    }
}

async fn exchange_meta(r: &Replication, engine: &Engine, conn: &Connection) -> Result<(), String> {
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
    Ok(())
}
