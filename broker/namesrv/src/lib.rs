//! The name server (`wasmq-broker namesrv`): a route table that brokers register with (every
//! `register_interval`, as their heartbeat) and clients ask for a topic's route. It keeps no
//! state worth losing: everything it knows, brokers tell it again within one interval; several
//! name servers know the same because every broker registers with each. A broker is held
//! **down** — in no route, listed with how long it has been down — as soon as the connection it
//! registered over closes (killed or stopped) or once it has missed
//! [`REGISTRATIONS_MISSED_DOWN`] registrations (hung or cut off); one silent for
//! `broker_expiry` is dropped.
//!
//! The broker's side is [`broker`]: registering with every name server, and asking them for
//! the cluster's brokers.

mod broker;

pub use broker::{NameServers, register_loop};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmq_protocol::{
    BROKERS_MAX, BrokerEntry, BrokerRoute, ErrorCode, Frame, FrameDecoder, GetRouteResponse, HelloResponse, Kind, Op, PROTOCOL_VERSION,
    RegisterBrokerRequest, Request, Response,
};

/// Brokers are dropped after this long without registering (RocketMQ: 120 s).
pub const BROKER_EXPIRY_DEFAULT: Duration = Duration::from_secs(120);
/// A broker that misses this many registrations in a row (by its own interval) is held down.
pub const REGISTRATIONS_MISSED_DOWN: u32 = 3;
/// How often the name server looks for silent brokers (a pass over at most `BROKERS_MAX`).
const SWEEP_INTERVAL: Duration = Duration::from_millis(200);
/// Largest frame a name server reads (a registration lists every topic of a broker).
const FRAME_BYTES_MAX: usize = 4 << 20;
/// Connections one name server keeps open at once (brokers and clients).
pub const CONNECTIONS_MAX: usize = 4096;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Registration {
    req: RegisterBrokerRequest,
    at: Instant,
    /// The connection it came over (closing it takes the broker down).
    conn: u64,
    /// Since when the broker is held down.
    down_since: Option<Instant>,
}

impl Registration {
    /// Silent past its own interval times [`REGISTRATIONS_MISSED_DOWN`] (an interval of 0: never).
    fn missed(&self, now: Instant) -> bool {
        let interval = Duration::from_millis(u64::from(self.req.register_interval_ms));
        !interval.is_zero() && now.saturating_duration_since(self.at) > interval * REGISTRATIONS_MISSED_DOWN
    }
}

/// The route table: (broker name, broker id) → its last registration.
#[derive(Debug, Default)]
pub struct RouteTable {
    brokers: Mutex<BTreeMap<(String, u32), Registration>>,
}

impl RouteTable {
    /// Records a registration (a broker's heartbeat) that came over connection `conn`; a broker
    /// held down is up again.
    ///
    /// # Errors
    /// Too many brokers.
    pub fn register(&self, req: RegisterBrokerRequest, conn: u64) -> Result<(), String> {
        let mut b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (req.broker_name.clone(), req.broker_id);
        match b.get(&key) {
            None if b.len() >= BROKERS_MAX => return Err(format!("more than {BROKERS_MAX} brokers")),
            None => tracing::info!(broker = req.broker_name, id = req.broker_id, addr = req.addr, "broker registered"),
            Some(r) if r.down_since.is_some() => {
                tracing::info!(broker = req.broker_name, id = req.broker_id, addr = req.addr, "broker up again");
            }
            Some(_) => {}
        }
        b.insert(key, Registration { req, at: Instant::now(), conn, down_since: None });
        Ok(())
    }

    /// Connection `conn` closed: the brokers that registered over it are down.
    pub fn connection_closed(&self, conn: u64) {
        let mut b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        for ((name, id), r) in b.iter_mut().filter(|(_, r)| r.conn == conn && r.down_since.is_none()) {
            tracing::warn!(broker = name, id, addr = r.req.addr, "broker down: its connection to the name server closed");
            r.down_since = Some(Instant::now());
        }
    }

    /// Holds down brokers that missed [`REGISTRATIONS_MISSED_DOWN`] registrations, and drops
    /// those silent for `expiry`, as of `now`; returns how many were dropped.
    pub fn expire(&self, now: Instant, expiry: Duration) -> usize {
        let mut b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let before = b.len();
        b.retain(|(name, id), r| {
            let silent = now.saturating_duration_since(r.at);
            if silent >= expiry {
                tracing::info!(broker = name, id, silent_ms = silent.as_millis() as u64, "broker dropped (no registration)");
                return false;
            }
            if r.down_since.is_none() && r.missed(now) {
                tracing::warn!(broker = name, id, silent_ms = silent.as_millis() as u64, "broker down: registrations missed");
                r.down_since = Some(now);
            }
            true
        });
        before - b.len()
    }

    /// The broker sets serving `topic` with a broker up: queues (as the master registered them,
    /// else a slave), the master's address if it is up, and the slaves' that are.
    ///
    /// # Errors
    /// No broker that is up serves `topic` (the text says which are down).
    pub fn route(&self, topic: &str) -> Result<Vec<BrokerRoute>, String> {
        let b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let mut sets: BTreeMap<&str, BrokerRoute> = BTreeMap::new();
        let mut master_epochs: BTreeMap<&str, u64> = BTreeMap::new();
        let mut down = Vec::new();
        for ((name, id), r) in b.iter() {
            let Some(&(_, queues)) = r.req.topics.iter().find(|(t, _)| t == topic) else { continue };
            if r.down_since.is_some() {
                down.push(format!("{name} {id} at {}", r.req.addr));
                continue;
            }
            let set = sets.entry(name).or_insert_with(|| BrokerRoute {
                broker_name: name.clone(),
                queues,
                master: None,
                slaves: Vec::new(),
                master_endpoints: Vec::new(),
            });
            // Two that say master (one replaced, not yet re-registered as a slave): the newer
            // epoch's.
            let newer = master_epochs.get(name.as_str()).is_none_or(|e| r.req.epoch > *e);
            if r.req.master && newer {
                if let Some(old) = set.master.replace(r.req.addr.clone()) {
                    set.slaves.push(old);
                }
                master_epochs.insert(name, r.req.epoch);
                set.master_endpoints.clone_from(&r.req.endpoints);
                set.queues = queues;
            } else {
                set.slaves.push(r.req.addr.clone());
            }
        }
        if sets.is_empty() {
            return Err(if down.is_empty() {
                format!("no broker serves topic {topic}")
            } else {
                format!("every broker serving topic {topic} is down ({})", down.join(", "))
            });
        }
        Ok(sets.into_values().collect())
    }

    /// Every registered broker, up or down.
    pub fn cluster(&self) -> Vec<BrokerEntry> {
        let now = Instant::now();
        let b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        b.values()
            .map(|r| BrokerEntry {
                cluster: r.req.cluster.clone(),
                broker_name: r.req.broker_name.clone(),
                broker_id: r.req.broker_id,
                addr: r.req.addr.clone(),
                admin_addr: r.req.admin_addr.clone(),
                // The broker's own (`%…`) topics are not counted.
                topics: r.req.topics.iter().filter(|(t, _)| !t.starts_with('%')).count() as u32,
                last_seen_ms_ago: now.saturating_duration_since(r.at).as_millis() as u64,
                down_ms_ago: r.down_since.map(|d| now.saturating_duration_since(d).as_millis() as u64),
                live: r.req.live.clone(),
                endpoints: r.req.endpoints.clone(),
                master: r.req.master,
                epoch: r.req.epoch,
            })
            .collect()
    }
}

/// Serves the name server protocol on `listener` until `shutdown`, holding down brokers whose
/// connection closed or that missed registrations, and dropping those silent for `broker_expiry`.
pub async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, broker_expiry: Duration, shutdown: CancellationToken) {
    let table = Arc::new(RouteTable::default());
    let (t, stop) = (Arc::clone(&table), shutdown.clone());
    let tracker = TaskTracker::new();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => { t.expire(Instant::now(), broker_expiry); }
                () = stop.cancelled() => return,
            }
        }
    });
    let stop = shutdown.clone();
    let next_conn = Arc::new(AtomicU64::new(1));
    wasmq_net::serve_tls("namesrv", listener, acceptor, CONNECTIONS_MAX, shutdown, tracker.clone(), move |tls, _peer| {
        let (table, stop) = (Arc::clone(&table), stop.clone());
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::select! {
                () = serve_connection(tls, &table, conn) => table.connection_closed(conn),
                // The name server stops: its brokers are not down.
                () = stop.cancelled() => {}
            }
        }
    })
    .await;
    tracker.close();
    tracker.wait().await;
}

/// One connection: requests answered in order (a name server's answers are quick).
async fn serve_connection(mut tls: wasmq_net::TlsStream, table: &RouteTable, conn: u64) {
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut out = BytesMut::new();
    let mut hello = false;
    loop {
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let reply = answer(frame, table, conn, &mut hello);
            let Some(reply) = reply else { return };
            out.clear();
            reply.encode(&mut out);
            if tls.write_all(&out).await.is_err() || tls.flush().await.is_err() {
                return;
            }
        }
        match tokio::time::timeout(IDLE_TIMEOUT, tls.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

fn answer(frame: Frame, table: &RouteTable, conn: u64, hello: &mut bool) -> Option<Frame> {
    let id = frame.request_id;
    let respond = |code: u16, body: bytes::Bytes| Some(Frame { kind: Kind::Response, request_id: id, code, body });
    let fail = |code: ErrorCode, text: String| respond(code as u16, bytes::Bytes::from(text));
    if frame.kind != Kind::Request {
        return None;
    }
    let Some(op) = Op::from_u16(frame.code) else { return fail(ErrorCode::UnknownOp, format!("unknown op {}", frame.code)) };
    let req = match Request::decode(op, frame.body) {
        Ok(r) => r,
        Err(e) => return fail(ErrorCode::Malformed, e.to_string()),
    };
    let resp = match req {
        Request::Hello(h) => {
            if !(h.version_min..=h.version_max).contains(&PROTOCOL_VERSION) {
                return fail(ErrorCode::UnsupportedVersion, format!("name server speaks version {PROTOCOL_VERSION}"));
            }
            *hello = true;
            Response::Hello(HelloResponse {
                version: PROTOCOL_VERSION,
                broker_name: "namesrv".into(),
                frame_bytes_max: FRAME_BYTES_MAX as u32,
                in_flight_max: 64,
                message_bytes_max: 0,
            })
        }
        _ if !*hello => return fail(ErrorCode::HandshakeRequired, "send Hello first".into()),
        Request::RegisterBroker(r) => match table.register(r, conn) {
            Ok(()) => Response::Empty,
            Err(e) => return fail(ErrorCode::InvalidRequest, e),
        },
        Request::GetRoute(r) => match table.route(&r.topic) {
            Ok(brokers) => Response::GetRoute(GetRouteResponse { topic: r.topic, brokers }),
            Err(e) => return fail(ErrorCode::UnknownTopic, e),
        },
        Request::GetCluster => Response::GetCluster(table.cluster()),
        _ => return fail(ErrorCode::InvalidRequest, "a name server answers Hello, RegisterBroker, GetRoute and GetCluster".into()),
    };
    respond(0, resp.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &str, id: u32, interval_ms: u32) -> RegisterBrokerRequest {
        RegisterBrokerRequest {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            addr: format!("{name}-{id}:7070"),
            admin_addr: format!("{name}-{id}:7071"),
            topics: vec![("orders".into(), 4)],
            live: wasmq_protocol::BrokerLive::default(),
            register_interval_ms: interval_ms,
            endpoints: vec![wasmq_protocol::Endpoint { protocol: "grpc".into(), addr: format!("{name}-{id}:8081") }],
            master: id == 0,
            epoch: 0,
        }
    }

    /// Under a failover controller any member may be master: the route names the one that
    /// registered as master in the newest epoch, whatever its id, and lists a replaced master
    /// that still says so (hung, not yet re-registered) among the slaves.
    #[test]
    fn the_route_names_the_master_of_the_newest_epoch() {
        let t = RouteTable::default();
        let reg = |id: u32, master: bool, epoch: u64| RegisterBrokerRequest { master, epoch, ..registration("a", id, 1000) };
        t.register(reg(0, true, 1), 1).unwrap();
        t.register(reg(1, false, 1), 2).unwrap();
        t.register(reg(2, true, 2), 3).unwrap();
        let route = t.route("orders").unwrap();
        assert_eq!(route[0].master.as_deref(), Some("a-2:7070"));
        let mut slaves = route[0].slaves.clone();
        slaves.sort();
        assert_eq!(slaves, ["a-0:7070", "a-1:7070"]);
        assert_eq!(wasmq_protocol::Endpoint::find(&route[0].master_endpoints, "grpc"), Some("a-2:8081"));
        let cluster = t.cluster();
        assert!(cluster.iter().any(|b| b.broker_id == 2 && b.master && b.epoch == 2), "{cluster:?}");
    }

    fn down(table: &RouteTable) -> Vec<(String, u32)> {
        table.cluster().into_iter().filter(|b| b.down_ms_ago.is_some()).map(|b| (b.broker_name, b.broker_id)).collect()
    }

    #[test]
    fn a_closed_connection_takes_its_brokers_down_and_out_of_routes() {
        let t = RouteTable::default();
        t.register(registration("a", 0, 1000), 1).unwrap();
        t.register(registration("a", 1, 1000), 2).unwrap();
        t.register(registration("b", 0, 1000), 3).unwrap();
        t.connection_closed(1);
        assert_eq!(down(&t), [("a".to_owned(), 0)]);
        let route = t.route("orders").unwrap();
        assert_eq!(route.len(), 2);
        assert_eq!((route[0].master.as_deref(), route[0].slaves.as_slice(), route[0].queues), (None, &["a-1:7070".to_owned()][..], 4));
        assert!(route[0].master_endpoints.is_empty(), "a down master's front ends are in no route");
        assert_eq!(route[1].master.as_deref(), Some("b-0:7070"));
        assert_eq!(wasmq_protocol::Endpoint::find(&route[1].master_endpoints, "grpc"), Some("b-0:8081"));
        // A connection that registered nothing, or another broker's, changes nothing.
        t.connection_closed(9);
        assert_eq!(down(&t).len(), 1);
        // Registering again (over a new connection) brings it back; its old connection closing
        // later does not take it down.
        t.register(registration("a", 0, 1000), 4).unwrap();
        t.connection_closed(1);
        assert!(down(&t).is_empty());
        assert_eq!(t.route("orders").unwrap()[0].master.as_deref(), Some("a-0:7070"));
        assert_eq!(wasmq_protocol::Endpoint::find(&t.route("orders").unwrap()[0].master_endpoints, "grpc"), Some("a-0:8081"));
        // Every broker of a topic down: the route says so, naming them.
        for conn in 2..=4 {
            t.connection_closed(conn);
        }
        let e = t.route("orders").unwrap_err();
        assert!(e.contains("every broker serving topic orders is down") && e.contains("a 0 at a-0:7070"), "{e}");
        assert_eq!(t.route("nope").unwrap_err(), "no broker serves topic nope");
    }

    #[test]
    fn missed_registrations_take_a_broker_down_and_expiry_drops_it() {
        let t = RouteTable::default();
        let start = Instant::now();
        t.register(registration("a", 0, 100), 1).unwrap();
        t.register(registration("b", 0, 1000), 2).unwrap();
        // Unknown interval (0): only its connection or the expiry can take it down.
        t.register(registration("c", 0, 0), 3).unwrap();
        let expiry = Duration::from_secs(10);
        assert_eq!(t.expire(start + Duration::from_millis(300), expiry), 0);
        assert!(down(&t).is_empty(), "three intervals are not yet missed");
        assert_eq!(t.expire(start + Duration::from_millis(301), expiry), 0);
        assert_eq!(down(&t), [("a".to_owned(), 0)]);
        assert_eq!(t.expire(start + Duration::from_millis(3001), expiry), 0);
        assert_eq!(down(&t), [("a".to_owned(), 0), ("b".to_owned(), 0)]);
        assert_eq!(t.expire(start + Duration::from_secs(9), expiry), 0);
        assert_eq!(down(&t).len(), 2, "c has no interval to miss");
        assert_eq!(t.expire(start + Duration::from_secs(11), expiry), 3, "silent for the expiry: dropped");
        assert!(t.cluster().is_empty());
    }
}
