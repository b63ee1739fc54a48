//! Client connections: frames, version handshake, concurrent requests, each answered by the
//! service.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use wasmq_engine::Decided;
use wasmq_net::HANDSHAKE_TIMEOUT;
use wasmq_protocol::{
    EndTransactionResponse, ErrorCode, Frame, FrameDecoder, HelloResponse, Kind, OffsetQueryResponse, Op, OutFrame, PROTOCOL_VERSION,
    PULL_MESSAGES_MAX, PULL_WAIT_MAX_MS, PullResponse, QUEUE_ANY, Request, Response, RouteResponse, SendResponse, SendResult, TxDecision,
    TxState,
};
use wasmq_service::{Asker, Identity, PULL_BYTES_MAX, Pull, Service, TransactionSend, TxOutcome};

use crate::wire::{self, WireError};

/// Room in a connection's outbound queue beyond its requests' answers, for the broker's own
/// requests (check-backs).
const OUTBOUND_BROKER_FRAMES: usize = 16;
/// A connection whose socket accepts nothing for this long is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer growth step.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub service: Arc<Service>,
    pub in_flight_max: u32,
    pub frame_bytes_max: u32,
    pub shutdown: CancellationToken,
    /// Connections of producer groups (for transaction check-backs).
    pub producers: Arc<crate::Producers>,
}

/// What a request handler knows of its connection.
struct ConnCtx<'a> {
    id: u64,
    /// Who logged in (in Hello), from where.
    asker: &'a Asker,
    tx: &'a mpsc::Sender<OutFrame>,
    cancel: &'a CancellationToken,
}

fn response(request_id: u32, status: u16, parts: Vec<Bytes>) -> OutFrame {
    OutFrame { kind: Kind::Response, request_id, code: status, parts }
}

fn error_frame(request_id: u32, e: &WireError) -> OutFrame {
    response(request_id, e.code as u16, vec![wire::error_body(e)])
}

/// Serves one connection (its TLS handshake done) until it closes, fails, or the broker shuts
/// down.
/// This front end's name in metrics.
const PROTOCOL: &str = "native";

pub async fn serve(tls: wasmq_net::TlsStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let metrics = Arc::clone(shared.service.metrics());
    let open = metrics.connections.get_or_create(&wasmq_service::metrics::ProtocolLabels { protocol: PROTOCOL }).clone();
    open.inc();
    serve_connection(tls, peer, shared).await;
    open.dec();
}

async fn serve_connection(tls: wasmq_net::TlsStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    let reset = wasmq_net::ResetOnClose::new(&tls);
    let (mut rd, mut wr) = tokio::io::split(tls);
    // Responses queued for the writer: at most one per request in flight, and the broker's own
    // requests (check-backs). A client that stops reading fills it, and then its requests wait
    // (backpressure) instead of the broker's memory growing.
    let (tx, mut rx) = mpsc::channel::<OutFrame>(shared.in_flight_max as usize + OUTBOUND_BROKER_FRAMES);
    let writer = tokio::spawn(async move {
        let (mut scratch, mut parts) = (BytesMut::new(), Vec::new());
        while let Some(f) = rx.recv().await {
            wasmq_protocol::gather_batch(f, std::iter::from_fn(|| rx.try_recv().ok()), &mut scratch, &mut parts);
            match tokio::time::timeout(WRITE_TIMEOUT, wasmq_net::write_parts(&mut wr, &mut parts)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(%peer, "client stopped reading; closing the connection");
                    // Its unread answers would hold a graceful close back indefinitely.
                    if let Ok(reset) = &reset {
                        reset.arm();
                    }
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    });

    let decoder = FrameDecoder::new(shared.frame_bytes_max as usize);
    let in_flight = Arc::new(Semaphore::new(shared.in_flight_max as usize));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut hello_done = false;
    let mut asker = Asker::new(Identity::Anonymous, Some(peer.ip()), PROTOCOL);
    let hello_deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let conn_cancel = shared.shutdown.child_token();
    let conn_id = shared.producers.connection_id();
    // Under async flush and without synchronous replication a send is answered as soon as it
    // is appended.
    let answered_at_once = shared.service.answers_at_append();
    // Shared by this connection's sends: one reference count per send, not three.
    let send_metrics = Arc::new(shared.service.metrics().op(PROTOCOL, Op::Send.name()));
    // Sends decoded from what was read, not yet queued with the service.
    let mut pending: Vec<(wasmq_service::Send, wasmq_service::Answer)> = Vec::new();
    'conn: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if frame.kind != Kind::Request {
                        tracing::info!(%peer, "client sent a response frame; closing");
                        let _ = tx.send(error_frame(0, &WireError::new(ErrorCode::Malformed, "clients send requests only"))).await;
                        break 'conn;
                    }
                    if !hello_done && frame.code != Op::Hello as u16 {
                        let _ =
                            tx.send(error_frame(frame.request_id, &WireError::new(ErrorCode::HandshakeRequired, "send Hello first"))).await;
                        break 'conn;
                    }
                    // Sends decoded but not yet queued hold places in flight: queue them (they
                    // are appended, and their places given back, unless another connection is
                    // appending them) before counting this request as one too many.
                    if in_flight.available_permits() == 0 && !pending.is_empty() {
                        shared.service.submit(std::mem::take(&mut pending)).await;
                    }
                    let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                        let e =
                            WireError::new(ErrorCode::TooManyInFlight, format!("more than {} requests in flight", shared.in_flight_max));
                        if tx.send(error_frame(frame.request_id, &e)).await.is_err() {
                            break 'conn;
                        }
                        continue;
                    };
                    if frame.code == Op::Hello as u16 {
                        if hello_done {
                            let e = WireError::new(ErrorCode::InvalidRequest, "Hello was already sent");
                            if tx.send(error_frame(frame.request_id, &e)).await.is_err() {
                                break 'conn;
                            }
                            continue;
                        }
                        let (reply, logged_in) = hello(&shared, frame.request_id, frame.body, peer).await;
                        hello_done = logged_in.is_some();
                        if let Some(id) = logged_in {
                            asker.who = id;
                        }
                        if tx.send(reply).await.is_err() || !hello_done {
                            break 'conn;
                        }
                        continue;
                    }
                    if answered_at_once && frame.code == Op::Send as u16 {
                        // Nothing to wait for but the append: queued for the group append here,
                        // in order, without a task of its own (a spawned task per send costs a
                        // wakeup of another worker); the appender hands the answer to the
                        // writer. The next request is read meanwhile, so this connection's
                        // sends share groups.
                        let slot = match tx.clone().try_reserve_owned() {
                            Ok(slot) => slot,
                            Err(mpsc::error::TrySendError::Closed(_)) => break 'conn,
                            Err(mpsc::error::TrySendError::Full(tx)) => {
                                // No room for the answer: the client is not reading. Queue what
                                // is decoded, then wait for room (backpressure).
                                shared.service.submit(std::mem::take(&mut pending)).await;
                                let Ok(slot) = tx.reserve_owned().await else { break 'conn };
                                slot
                            }
                        };
                        if let Some(send) = queue_send(
                            &shared,
                            frame,
                            &ConnCtx { id: conn_id, asker: &asker, tx: &tx, cancel: &conn_cancel },
                            (slot, permit),
                            Arc::clone(&send_metrics),
                        ) {
                            pending.push(send);
                        }
                        continue;
                    }
                    // Sends read before this request are queued before it is handled.
                    shared.service.submit(std::mem::take(&mut pending)).await;
                    let (shared, tx, cancel, asker) = (Arc::clone(&shared), tx.clone(), conn_cancel.clone(), asker.clone());
                    tokio::spawn(async move {
                        let one_way = frame.request_id == 0;
                        let started = std::time::Instant::now();
                        let op = Op::from_u16(frame.code).map_or("unknown", Op::name);
                        let reply = handle(&shared, frame, &ConnCtx { id: conn_id, asker: &asker, tx: &tx, cancel: &cancel }).await;
                        shared.service.metrics().request(PROTOCOL, op, reply.code == 0, started.elapsed());
                        if !one_way {
                            let _ = tx.send(reply).await;
                        }
                        drop(permit);
                    });
                }
                Ok(None) => {
                    // Everything read so far is decoded: its sends go to the group append
                    // as one queue entry.
                    shared.service.submit(std::mem::take(&mut pending)).await;
                    break;
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "bad frame; closing the connection");
                    let _ = tx.send(error_frame(0, &WireError::new(ErrorCode::FrameTooLarge, e.to_string()))).await;
                    break 'conn;
                }
            }
        }
        if tx.is_closed() {
            // The writer gave up (the client stopped reading): stop reading requests too.
            break;
        }
        buf.reserve(READ_CHUNK_BYTES);
        let read = async {
            if hello_done {
                rd.read_buf(&mut buf).await
            } else {
                tokio::time::timeout_at(hello_deadline, rd.read_buf(&mut buf)).await.unwrap_or(Ok(0))
            }
        };
        tokio::select! {
            n = read => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = shared.shutdown.cancelled() => break,
            // The writer gave up on a client that stopped reading: the connection closes now,
            // not when the client next sends something.
            () = tx.closed() => break,
        }
    }
    // Stop long polls of this connection; let in-flight requests finish, then close.
    shared.producers.unregister(conn_id);
    conn_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), in_flight.acquire_many(shared.in_flight_max)).await;
    drop(tx);
    let _ = writer.await;
}

/// Answers Hello; returns who logged in (`None`: refused, the connection closes). Credentials
/// are checked on a blocking thread (argon2 takes milliseconds of CPU by design).
async fn hello(shared: &Shared, request_id: u32, body: Bytes, peer: std::net::SocketAddr) -> (OutFrame, Option<Identity>) {
    let req = match Request::decode(Op::Hello, body) {
        Ok(Request::Hello(h)) => h,
        Ok(_) => unreachable!("decoded as Hello"),
        Err(e) => return (error_frame(request_id, &WireError::new(ErrorCode::Malformed, e.to_string())), None),
    };
    if !(req.version_min..=req.version_max).contains(&PROTOCOL_VERSION) {
        let e = WireError::new(
            ErrorCode::UnsupportedVersion,
            format!("broker speaks version {PROTOCOL_VERSION}; client offered {}..={}", req.version_min, req.version_max),
        );
        return (error_frame(request_id, &e), None);
    }
    let who = match req.credentials {
        None if shared.service.security().enforcing() => {
            let e = WireError::new(
                ErrorCode::NotAuthenticated,
                "this broker requires a user: log in (the CLI's --user and --password, ConnectionOptions::login)",
            );
            return (error_frame(request_id, &e), None);
        }
        None => Identity::Anonymous,
        Some(c) => {
            let service = Arc::clone(&shared.service);
            let checked = tokio::task::spawn_blocking(move || service.login(&c.user, &c.password, Some(peer.ip()), PROTOCOL)).await;
            match checked {
                Ok(Ok(who)) => who,
                Ok(Err(e)) => return (error_frame(request_id, &WireError::new(ErrorCode::NotAuthenticated, e.to_string())), None),
                Err(e) => return (error_frame(request_id, &WireError::new(ErrorCode::Internal, e.to_string())), None),
            }
        }
    };
    let resp = Response::Hello(HelloResponse {
        version: PROTOCOL_VERSION,
        broker_name: shared.service.engine().broker_name().to_owned(),
        frame_bytes_max: shared.frame_bytes_max,
        in_flight_max: shared.in_flight_max,
        message_bytes_max: shared.service.engine().store().config().message_bytes_max,
    });
    (response(request_id, 0, resp.encode_parts()), Some(who))
}

async fn handle(shared: &Shared, frame: Frame, conn: &ConnCtx<'_>) -> OutFrame {
    let id = frame.request_id;
    let Some(op) = Op::from_u16(frame.code) else {
        return error_frame(id, &WireError::new(ErrorCode::UnknownOp, format!("unknown op {}", frame.code)));
    };
    let req = match Request::decode(op, frame.body) {
        Ok(r) => r,
        Err(e) => return error_frame(id, &WireError::new(ErrorCode::Malformed, e.to_string())),
    };
    match dispatch(shared, req, conn).await {
        Ok(resp) => response(id, 0, resp.encode_parts()),
        Err(e) => error_frame(id, &e),
    }
}

/// A send request in the service's terms; a transactional one registers its connection with
/// the producer group (for check-backs).
fn to_send(shared: &Shared, s: wasmq_protocol::SendRequest, conn: &ConnCtx<'_>) -> wasmq_service::Send {
    let transaction = if s.transactional {
        if shared.producers.register(conn.id, &s.producer_group, conn.tx, &conn.asker.who) {
            shared.service.producer_joined(&s.producer_group);
        }
        Some(TransactionSend {
            producer_group: s.producer_group,
            check_after_ms: (s.check_after_ms > 0).then_some(u64::from(s.check_after_ms)),
        })
    } else {
        None
    };
    wasmq_service::Send {
        topic: s.topic,
        queue: (s.queue_id != QUEUE_ANY).then_some(s.queue_id),
        messages: s.messages.into_iter().map(wire::to_store).collect(),
        transaction,
    }
}

fn send_response(sent: &wasmq_service::Sent, guarantee: wasmq_service::Guarantee) -> Response {
    let results = sent
        .appended
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| SendResult { queue_id: sent.queue_of(i), queue_offset: m.queue_offset, log_offset: m.log_offset })
        .collect();
    Response::Send(SendResponse { queue_id: sent.queue_id, results, status: wire::send_status(guarantee) })
}

/// A send answered at append, ready to queue with the service: its answer (none for a one-way
/// send) goes into `slot` on the appender's thread; `permit` (its place among the requests in
/// flight) is held until then; `metrics` counts and times it. A malformed one is answered at once.
fn queue_send(
    shared: &Shared,
    frame: Frame,
    conn: &ConnCtx<'_>,
    (slot, permit): (mpsc::OwnedPermit<OutFrame>, tokio::sync::OwnedSemaphorePermit),
    metrics: Arc<wasmq_service::metrics::OpMetrics>,
) -> Option<(wasmq_service::Send, wasmq_service::Answer)> {
    let id = frame.request_id;
    let s = match Request::decode(Op::Send, frame.body) {
        Ok(Request::Send(s)) => s,
        Ok(_) => unreachable!("decoded as Send"),
        Err(e) => {
            if id != 0 {
                slot.send(error_frame(id, &WireError::new(ErrorCode::Malformed, e.to_string())));
            }
            return None;
        }
    };
    if let Err(e) = shared.service.authorize_topic(conn.asker, wasmq_service::Action::Produce, &s.topic) {
        metrics.record(false, std::time::Duration::ZERO);
        if id != 0 {
            slot.send(error_frame(id, &wire::service_error(&e)));
        }
        return None;
    }
    let started = std::time::Instant::now();
    let answer = move |r: Result<(wasmq_service::Sent, wasmq_service::Guarantee), wasmq_service::ServiceError>| {
        // Released before the answer leaves, so a client that keeps within the limit never
        // finds it still taken.
        drop(permit);
        metrics.record(r.is_ok(), started.elapsed());
        if id != 0 {
            slot.send(match r {
                Ok((sent, guarantee)) => response(id, 0, send_response(&sent, guarantee).encode_parts()),
                Err(e) => error_frame(id, &wire::service_error(&e)),
            });
        }
    };
    Some((to_send(shared, s, conn), Box::new(answer)))
}

async fn dispatch(shared: &Shared, req: Request, conn: &ConnCtx<'_>) -> Result<Response, WireError> {
    let service = &shared.service;
    let engine = service.engine();
    let cancel = conn.cancel;
    for (action, resource) in crate::authz::required(&req) {
        service.authorize(conn.asker, action, &resource)?;
    }
    match req {
        Request::Hello(_) => Err(WireError::new(ErrorCode::InvalidRequest, "Hello was already sent")),
        Request::Send(s) => {
            let (sent, guarantee) = service.send(to_send(shared, s, conn)).await?;
            Ok(send_response(&sent, guarantee))
        }
        Request::Pull(p) => {
            let pull = Pull {
                topic: p.topic,
                queue_id: p.queue_id,
                offset: p.offset,
                max_messages: p.max_messages.clamp(1, PULL_MESSAGES_MAX) as usize,
                max_bytes: p.max_bytes.clamp(1, PULL_BYTES_MAX) as usize,
                wait: Duration::from_millis(u64::from(p.wait_ms.min(PULL_WAIT_MAX_MS))),
                tag_filter: p.filter,
                group: p.group,
            };
            let pulled = service.pull(&pull, cancel).await?;
            let r = pulled.read;
            Ok(Response::Pull(PullResponse {
                messages: r.messages.into_iter().map(wire::from_store).collect(),
                next_offset: r.next_offset,
                min_offset: r.min_offset,
                max_offset: r.max_offset,
                suggest: wire::read_from(pulled.suggest),
            }))
        }
        Request::Route(r) => {
            let c = engine
                .topic(&r.topic)
                .ok_or_else(|| WireError::new(ErrorCode::UnknownTopic, format!("topic {} does not exist", r.topic)))?;
            Ok(Response::Route(RouteResponse { topic: r.topic, queues: c.queues, broker_name: engine.broker_name().to_owned() }))
        }
        Request::OffsetCommit(c) => {
            service.commit_offset(&c.group, &c.topic, c.queue_id, c.offset)?;
            Ok(Response::Empty)
        }
        Request::OffsetQuery(q) => {
            Ok(Response::OffsetQuery(OffsetQueryResponse { offset: service.query_offset(&q.group, &q.topic, q.queue_id) }))
        }
        Request::Heartbeat(h) => {
            for g in &h.producer_groups {
                if shared.producers.register(conn.id, g, conn.tx, &conn.asker.who) {
                    service.producer_joined(g);
                }
            }
            service.heartbeat(&h.client_id, h.producer_groups, h.consumer_groups)?;
            Ok(Response::Empty)
        }
        Request::GroupHeartbeat(h) => {
            let mode = match h.mode {
                wasmq_protocol::GroupMode::Clustering => wasmq_engine::GroupMode::Clustering,
                wasmq_protocol::GroupMode::Broadcasting => wasmq_engine::GroupMode::Broadcasting,
            };
            let a = service.group_heartbeat(&h.group, &h.client_id, mode, h.subscriptions)?;
            Ok(Response::GroupHeartbeat(wasmq_protocol::GroupHeartbeatResponse { generation: a.generation, queues: a.queues }))
        }
        Request::GroupLeave(l) => {
            service.group_leave(&l.group, &l.client_id);
            Ok(Response::Empty)
        }
        Request::SendBack(b) => {
            let max = (b.max_reconsume_times > 0).then_some(b.max_reconsume_times);
            service.send_back(&b.group, &b.topic, b.queue_id, b.log_offset, b.dead_letter, max)?;
            Ok(Response::Empty)
        }
        Request::LockQueue(l) => {
            if l.unlock {
                service.unlock_queue(&l.group, &l.client_id, &l.topic, l.queue_id);
                return Ok(Response::LockQueue { granted: false, expires_in_ms: 0 });
            }
            let (granted, expires_in_ms) = service.lock_queue(&l.group, &l.client_id, &l.topic, l.queue_id)?;
            Ok(Response::LockQueue { granted, expires_in_ms })
        }
        Request::EndTransaction(t) => {
            let decision = match t.decision {
                TxDecision::Commit => wasmq_engine::Decision::Commit,
                TxDecision::Rollback => wasmq_engine::Decision::Rollback,
                TxDecision::Unknown => wasmq_engine::Decision::Unknown,
            };
            let state = |d: Decided| match d {
                Decided::Committed => TxState::Committed,
                Decided::RolledBack => TxState::RolledBack,
                Decided::Discarded => TxState::Discarded,
            };
            service.authorize_end_transaction(conn.asker, t.log_offset, &t.unique_id)?;
            let resp = match service.end_transaction(t.log_offset, &t.unique_id, decision).await? {
                TxOutcome::Applied(d) => EndTransactionResponse { state: state(d), applied: true },
                TxOutcome::StillPending => EndTransactionResponse { state: TxState::Pending, applied: false },
                TxOutcome::AlreadyDecided(d) => {
                    tracing::debug!(
                        log_offset = t.log_offset,
                        from_check = t.from_check,
                        "end of an already ended transaction: nothing changed"
                    );
                    EndTransactionResponse { state: state(d), applied: false }
                }
            };
            Ok(Response::EndTransaction(resp))
        }
        Request::ReplicaFetch(f) => {
            let r = service
                .replication()
                .fetch(engine, &f.broker_name, f.broker_id, &f.admin_addr, f.from, f.max_bytes, f.wait_ms, f.epoch, cancel)
                .await?;
            Ok(Response::ReplicaFetch(wasmq_protocol::ReplicaFetchResponse {
                start_offset: r.start_offset,
                master_end: r.master_end,
                segment_bytes: r.segment_bytes,
                epochs: r.epochs,
                bytes: r.bytes,
            }))
        }
        Request::ReplicaMeta(m) => {
            let meta = service.replication().meta(engine, &m.local_offsets_json)?;
            Ok(Response::ReplicaMeta(wasmq_protocol::ReplicaMetaResponse {
                topics_json: meta.topics_json,
                offsets_json: meta.offsets_json,
                groups_json: meta.groups_json,
                // Only to an admin of the cluster (authz.rs): it carries hashes and secrets.
                security_json: service.security().export(),
            }))
        }
        Request::RegisterBroker(_) | Request::GetRoute(_) | Request::GetCluster => {
            Err(WireError::new(ErrorCode::InvalidRequest, "this is a broker; routes and registrations go to a name server"))
        }
        Request::Controller(_) => {
            Err(WireError::new(ErrorCode::InvalidRequest, "this is a broker; controller calls go to a controller node"))
        }
        Request::CheckTransaction(_) => Err(WireError::new(ErrorCode::InvalidRequest, "CheckTransaction is sent by the broker, not to it")),
        Request::GroupCommit(c) => {
            service.group_commit(&c.group, &c.client_id, c.generation, &c.topic, c.queue_id, c.offset)?;
            Ok(Response::Empty)
        }
    }
}
