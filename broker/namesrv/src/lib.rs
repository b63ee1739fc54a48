//! The name server (`wasmq-broker namesrv`): a route table that brokers register with (every
//! `register_interval`, as their heartbeat) and clients ask for a topic's route. It keeps no
//! state worth losing: everything it knows, brokers tell it again within one interval; several
//! name servers know the same because every broker registers with each. A broker silent for
//! `broker_expiry` is dropped.
//!
//! The broker's side is [`broker`]: registering with every name server, and asking them for
//! the cluster's brokers.

mod broker;

pub use broker::{NameServers, register_loop};

use std::collections::BTreeMap;
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

/// Brokers drop out of routes after this long without registering (RocketMQ: 120 s).
pub const BROKER_EXPIRY_DEFAULT: Duration = Duration::from_secs(120);
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
}

/// The route table: (broker name, broker id) → its last registration.
#[derive(Debug, Default)]
pub struct RouteTable {
    brokers: Mutex<BTreeMap<(String, u32), Registration>>,
}

impl RouteTable {
    /// Records a registration (a broker's heartbeat).
    ///
    /// # Errors
    /// Too many brokers.
    pub fn register(&self, req: RegisterBrokerRequest) -> Result<(), String> {
        let mut b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (req.broker_name.clone(), req.broker_id);
        if b.len() >= BROKERS_MAX && !b.contains_key(&key) {
            return Err(format!("more than {BROKERS_MAX} brokers"));
        }
        if !b.contains_key(&key) {
            tracing::info!(broker = req.broker_name, id = req.broker_id, addr = req.addr, "broker registered");
        }
        b.insert(key, Registration { req, at: Instant::now() });
        Ok(())
    }

    /// Drops brokers silent for `expiry`; returns how many.
    pub fn expire(&self, expiry: Duration) -> usize {
        let mut b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let before = b.len();
        b.retain(|(name, id), r| {
            let keep = r.at.elapsed() < expiry;
            if !keep {
                tracing::info!(broker = name, id, "broker expired (no registration)");
            }
            keep
        });
        before - b.len()
    }

    /// The broker sets serving `topic`: queues (as the master registered them, else a slave),
    /// the master's address if it is registered, and the slaves'.
    pub fn route(&self, topic: &str) -> Vec<BrokerRoute> {
        let b = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let mut sets: BTreeMap<&str, BrokerRoute> = BTreeMap::new();
        for ((name, id), r) in b.iter() {
            let Some(&(_, queues)) = r.req.topics.iter().find(|(t, _)| t == topic) else { continue };
            let set =
                sets.entry(name).or_insert_with(|| BrokerRoute { broker_name: name.clone(), queues, master: None, slaves: Vec::new() });
            if *id == 0 {
                set.master = Some(r.req.addr.clone());
                set.queues = queues;
            } else {
                set.slaves.push(r.req.addr.clone());
            }
        }
        sets.into_values().collect()
    }

    /// Every registered broker.
    pub fn cluster(&self) -> Vec<BrokerEntry> {
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
                last_seen_ms_ago: r.at.elapsed().as_millis() as u64,
                live: r.req.live.clone(),
            })
            .collect()
    }
}

/// Serves the name server protocol on `listener` until `shutdown`, dropping brokers silent for
/// `broker_expiry`.
pub async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, broker_expiry: Duration, shutdown: CancellationToken) {
    let table = Arc::new(RouteTable::default());
    let (t, stop) = (Arc::clone(&table), shutdown.clone());
    let tracker = TaskTracker::new();
    tracker.spawn(async move {
        let mut every = tokio::time::interval((broker_expiry / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)));
        loop {
            tokio::select! {
                _ = every.tick() => { t.expire(broker_expiry); }
                () = stop.cancelled() => return,
            }
        }
    });
    let stop = shutdown.clone();
    wasmq_net::serve_tls("namesrv", listener, acceptor, CONNECTIONS_MAX, shutdown, tracker.clone(), move |tls, _peer| {
        let (table, stop) = (Arc::clone(&table), stop.clone());
        async move {
            tokio::select! {
                () = serve_connection(tls, &table) => {}
                () = stop.cancelled() => {}
            }
        }
    })
    .await;
    tracker.close();
    tracker.wait().await;
}

/// One connection: requests answered in order (a name server's answers are quick).
async fn serve_connection(mut tls: wasmq_net::TlsStream, table: &RouteTable) {
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut out = BytesMut::new();
    let mut hello = false;
    loop {
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let reply = answer(frame, table, &mut hello);
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

fn answer(frame: Frame, table: &RouteTable, hello: &mut bool) -> Option<Frame> {
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
        Request::RegisterBroker(r) => match table.register(r) {
            Ok(()) => Response::Empty,
            Err(e) => return fail(ErrorCode::InvalidRequest, e),
        },
        Request::GetRoute(r) => {
            let brokers = table.route(&r.topic);
            if brokers.is_empty() {
                return fail(ErrorCode::UnknownTopic, format!("no broker serves topic {}", r.topic));
            }
            Response::GetRoute(GetRouteResponse { topic: r.topic, brokers })
        }
        Request::GetCluster => Response::GetCluster(table.cluster()),
        _ => return fail(ErrorCode::InvalidRequest, "a name server answers Hello, RegisterBroker, GetRoute and GetCluster".into()),
    };
    respond(0, resp.encode())
}
