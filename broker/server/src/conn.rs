//! Client connections: TLS, frames, version handshake, concurrent requests, long polls.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wasmq_engine::{Decided, Decision, EndOutcome, Engine, Wake};
use wasmq_protocol::{
    EndTransactionResponse, ErrorCode, Frame, FrameDecoder, HelloResponse, Kind, OffsetQueryResponse, Op, OutFrame, PROTOCOL_VERSION,
    PULL_MESSAGES_MAX, PULL_WAIT_MAX_MS, PullResponse, QUEUE_ANY, ReadFrom, Request, Response, RouteResponse, SendResponse, SendResult,
    SendStatus, TxDecision, TxState,
};
use wasmq_store::FlushMode;

use crate::wire::{self, WireError};

/// Time a client has to finish the TLS handshake and send Hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued for one connection's writer; a client that stops reading fills it, and
/// then its requests wait (backpressure) instead of the broker's memory growing.
const OUTBOUND_FRAMES_MAX: usize = 64;
/// A connection whose socket accepts nothing for this long is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest pull response body the broker builds.
const PULL_BYTES_MAX: u32 = 8 << 20;
/// How often a long poll on a queue whose next message is not yet due looks again (retry
/// topics): a redelivery is at most this late, never early.
const RETRY_POLL: Duration = Duration::from_millis(50);
/// Read buffer growth step.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub engine: Arc<Engine>,
    pub plugins: Arc<crate::plugins::Plugins>,
    pub in_flight_max: u32,
    pub frame_bytes_max: u32,
    pub flush: FlushMode,
    pub shutdown: CancellationToken,
    /// Connections of producer groups (for transaction check-backs).
    pub producers: Arc<crate::held::Producers>,
    pub replication: Arc<crate::replication::Replication>,
}

/// What a request handler knows of its connection.
struct ConnCtx<'a> {
    id: u64,
    tx: &'a mpsc::Sender<OutFrame>,
    cancel: &'a CancellationToken,
}

fn response(request_id: u32, status: u16, parts: Vec<Bytes>) -> OutFrame {
    OutFrame { kind: Kind::Response, request_id, code: status, parts }
}

fn error_frame(request_id: u32, e: &WireError) -> OutFrame {
    response(request_id, e.code as u16, vec![wire::error_body(e)])
}

/// Serves one accepted TCP connection until it closes, fails, or the broker shuts down.
pub async fn serve(tcp: TcpStream, peer: std::net::SocketAddr, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(wasmq_client::read_ahead(tcp))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed (plaintext on the TLS port?)");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::channel::<OutFrame>(OUTBOUND_FRAMES_MAX);
    let writer = tokio::spawn(async move {
        let (mut scratch, mut parts) = (BytesMut::new(), Vec::new());
        while let Some(f) = rx.recv().await {
            wasmq_protocol::gather_batch(f, std::iter::from_fn(|| rx.try_recv().ok()), &mut scratch, &mut parts);
            match tokio::time::timeout(WRITE_TIMEOUT, wasmq_client::write_parts(&mut wr, &mut parts)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(%peer, "client stopped reading; closing the connection");
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
    let hello_deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let conn_cancel = shared.shutdown.child_token();
    let conn_id = shared.producers.connection_id();
    // Under async flush and without synchronous replication a send is answered as soon as it
    // is appended.
    let answered_at_once =
        matches!(shared.flush, FlushMode::Async { .. }) && !matches!(shared.replication.mode, crate::replication::Mode::Sync { .. });
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
                    let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                        let e =
                            WireError::new(ErrorCode::TooManyInFlight, format!("more than {} requests in flight", shared.in_flight_max));
                        if tx.send(error_frame(frame.request_id, &e)).await.is_err() {
                            break 'conn;
                        }
                        continue;
                    };
                    if frame.code == Op::Hello as u16 {
                        let (reply, ok) = hello(&shared, frame.request_id, frame.body);
                        hello_done |= ok;
                        if tx.send(reply).await.is_err() || !ok {
                            break 'conn;
                        }
                        continue;
                    }
                    if answered_at_once && frame.code == Op::Send as u16 {
                        // Nothing to wait for: handled here, in order, without a task of its own
                        // (a spawned task per send costs a wakeup of another worker).
                        let one_way = frame.request_id == 0;
                        let reply = handle(&shared, frame, &ConnCtx { id: conn_id, tx: &tx, cancel: &conn_cancel }).await;
                        drop(permit);
                        if !one_way && tx.send(reply).await.is_err() {
                            break 'conn;
                        }
                        continue;
                    }
                    let (shared, tx, cancel) = (Arc::clone(&shared), tx.clone(), conn_cancel.clone());
                    tokio::spawn(async move {
                        let one_way = frame.request_id == 0;
                        let reply = handle(&shared, frame, &ConnCtx { id: conn_id, tx: &tx, cancel: &cancel }).await;
                        if !one_way {
                            let _ = tx.send(reply).await;
                        }
                        drop(permit);
                    });
                }
                Ok(None) => break,
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
        }
    }
    // Stop long polls of this connection; let in-flight requests finish, then close.
    shared.producers.unregister(conn_id);
    conn_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), in_flight.acquire_many(shared.in_flight_max)).await;
    drop(tx);
    let _ = writer.await;
}

fn hello(shared: &Shared, request_id: u32, body: Bytes) -> (OutFrame, bool) {
    let req = match Request::decode(Op::Hello, body) {
        Ok(Request::Hello(h)) => h,
        Ok(_) => unreachable!("decoded as Hello"),
        Err(e) => return (error_frame(request_id, &WireError::new(ErrorCode::Malformed, e.to_string())), false),
    };
    if !(req.version_min..=req.version_max).contains(&PROTOCOL_VERSION) {
        let e = WireError::new(
            ErrorCode::UnsupportedVersion,
            format!("broker speaks version {PROTOCOL_VERSION}; client offered {}..={}", req.version_min, req.version_max),
        );
        return (error_frame(request_id, &e), false);
    }
    let resp = Response::Hello(HelloResponse {
        version: PROTOCOL_VERSION,
        broker_name: shared.engine.broker_name().to_owned(),
        frame_bytes_max: shared.frame_bytes_max,
        in_flight_max: shared.in_flight_max,
        message_bytes_max: shared.engine.store().config().message_bytes_max,
    });
    (response(request_id, 0, resp.encode_parts()), true)
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

/// Waits until the log up to `end_offset` is as safe as the broker set promises: fsynced under
/// sync flush (`what` names the write in a timeout's message), and held by enough slaves under
/// synchronous replication (else the status says why not: the bytes are on the master). Every
/// write a client or the admin API makes waits here before it is answered.
pub(crate) async fn durable(
    engine: &Engine,
    replication: &crate::replication::Replication,
    end_offset: u64,
    what: impl FnOnce() -> String,
) -> Result<SendStatus, WireError> {
    if let FlushMode::Sync { timeout } = engine.store().config().flush {
        let (tx, rx) = oneshot::channel();
        engine.store().on_durable(end_offset, move |r| {
            let _ = tx.send(r);
        });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(WireError::new(ErrorCode::StoreFailed, e.to_string())),
            Ok(Err(_)) => return Err(WireError::new(ErrorCode::ShuttingDown, "store closed before the flush")),
            Err(_) => return Err(WireError::new(ErrorCode::FlushTimeout, format!("{} but not flushed within {timeout:?}", what()))),
        }
    }
    Ok(replication.replicated(end_offset).await)
}

/// Stores a send's messages as the topic's plugins and the messages ask: routing and
/// ordering-key plugins choose queues; a transaction's (`half`: producer group, first check
/// after ms) and scheduled messages are held. Returns the queue, each message's queue (when
/// they differ) and where they were appended; not yet durable (see [`durable`]).
pub(crate) fn store_send(
    engine: &wasmq_engine::Engine,
    plugins: &crate::plugins::Plugins,
    topic: &str,
    queue: Option<u32>,
    mut messages: Vec<wasmq_store::NewMessage>,
    half: Option<(&str, Option<u64>)>,
) -> Result<(u32, Vec<u32>, wasmq_store::Appended), WireError> {
    // Routing and ordering-key plugins attached to the topic choose each message's queue; a
    // topic without them costs one map lookup here.
    let routed = plugins
        .route(topic, &mut messages, || engine.topic(topic).map(|c| (c.queues, queue.unwrap_or_else(|| engine.pick_queue(c.queues)))))?;
    let now = crate::now_ms();
    let scheduled = messages.iter().any(|m| m.properties.delivery_ms.is_some_and(|d| d > now));
    let held = half.is_some() || scheduled;
    if held && !routed {
        // Held messages are stored elsewhere first: their queue is chosen now.
        let queues = engine
            .topic(topic)
            .map(|c| c.queues)
            .ok_or_else(|| WireError::new(ErrorCode::UnknownTopic, format!("topic {topic} does not exist")))?;
        let q = queue.unwrap_or_else(|| engine.pick_queue(queues));
        messages.iter_mut().for_each(|m| m.queue_id = q);
    }
    let queue_ids: Vec<u32> = if routed || held { messages.iter().map(|m| m.queue_id).collect() } else { Vec::new() };
    let first = queue_ids.first().copied().unwrap_or_default();
    let (queue_id, appended) = if let Some((producer_group, after)) = half {
        (first, engine.send_half(topic, producer_group, after, messages).map_err(|e| wire::send_error(&e))?)
    } else if scheduled {
        (first, engine.send_scheduled(topic, messages).map_err(|e| wire::send_error(&e))?)
    } else if routed {
        (first, engine.send_routed(topic, messages).map_err(|e| wire::send_error(&e))?)
    } else {
        engine.send(topic, queue, messages).map_err(|e| wire::send_error(&e))?
    };
    Ok((queue_id, queue_ids, appended))
}

async fn dispatch(shared: &Shared, req: Request, conn: &ConnCtx<'_>) -> Result<Response, WireError> {
    let engine = &shared.engine;
    let cancel = conn.cancel;
    match req {
        Request::Hello(_) => Err(WireError::new(ErrorCode::InvalidRequest, "Hello was already sent")),
        Request::Send(s) => {
            if s.topic.starts_with('%') {
                return Err(WireError::new(ErrorCode::InvalidTopic, format!("{}: topics starting with % are the broker's own", s.topic)));
            }
            let queue = (s.queue_id != QUEUE_ANY).then_some(s.queue_id);
            let messages: Vec<_> = s.messages.into_iter().map(wire::to_store).collect();
            let half = if s.transactional {
                if shared.producers.register(conn.id, &s.producer_group, conn.tx) {
                    engine.producer_joined(&s.producer_group);
                }
                Some((s.producer_group.as_str(), (s.check_after_ms > 0).then_some(u64::from(s.check_after_ms))))
            } else {
                None
            };
            let (queue_id, queue_ids, appended) = store_send(engine, &shared.plugins, &s.topic, queue, messages, half)?;
            let status = durable(engine, &shared.replication, appended.end_offset, || {
                format!("stored at log offset {}", appended.messages[0].log_offset)
            })
            .await?;
            let results = appended
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| SendResult {
                    queue_id: queue_ids.get(i).copied().unwrap_or(queue_id),
                    queue_offset: m.queue_offset,
                    log_offset: m.log_offset,
                })
                .collect();
            Ok(Response::Send(SendResponse { queue_id, results, status }))
        }
        Request::Pull(p) => {
            if wasmq_engine::is_internal_topic(&p.topic) {
                // Half messages must stay invisible; held messages are read through their topic.
                return Err(WireError::new(ErrorCode::InvalidTopic, format!("{} is internal to the broker", p.topic)));
            }
            let max_messages = p.max_messages.clamp(1, PULL_MESSAGES_MAX) as usize;
            let max_bytes = p.max_bytes.clamp(1, PULL_BYTES_MAX) as usize;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(p.wait_ms.min(PULL_WAIT_MAX_MS)));
            loop {
                let pulled = match p.filter.as_deref() {
                    Some(f) => engine.pull_filtered(&p.topic, p.queue_id, p.offset, max_messages, max_bytes, f),
                    None => engine.pull(&p.topic, p.queue_id, p.offset, max_messages, max_bytes),
                };
                let read = match pulled {
                    // A filter plugin on the group's subscription keeps what the group gets.
                    Ok(r) => match p.group.as_deref() {
                        Some(g) => shared.plugins.filter(g, &p.topic, r),
                        None => r,
                    },
                    // Below the retained range (retention deleted it): answer where the queue
                    // now begins, as RocketMQ's OFFSET_TOO_SMALL with its next begin offset.
                    Err(wasmq_engine::PullError::Read(wasmq_store::ReadError::Trimmed { .. })) => {
                        let (min_offset, max_offset) = engine.store().queue_bounds(&p.topic, p.queue_id);
                        return Ok(Response::Pull(PullResponse {
                            messages: Vec::new(),
                            next_offset: min_offset,
                            min_offset,
                            max_offset,
                            suggest: ReadFrom::Here,
                        }));
                    }
                    Err(e) => return Err(wire::pull_error(&e)),
                };
                let now = tokio::time::Instant::now();
                // A filtered pull that skipped messages answers at once, so the offset moves on.
                if !read.messages.is_empty() || read.next_offset > p.offset || now >= deadline || cancel.is_cancelled() {
                    let suggest = shared.replication.suggest(engine.store().end_offset(), read.messages.first().map(|m| m.log_offset));
                    return Ok(Response::Pull(PullResponse {
                        messages: read.messages.into_iter().map(wire::from_store).collect(),
                        next_offset: read.next_offset,
                        min_offset: read.min_offset,
                        max_offset: read.max_offset,
                        suggest,
                    }));
                }
                if read.max_offset > p.offset {
                    // Messages are there but not due yet (a retry queue): look again shortly.
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_POLL.min(deadline - now)) => {}
                        () = cancel.cancelled() => {}
                    }
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                if engine.wait_for(&p.topic, p.queue_id, p.offset, Box::new(Waker(tx))).is_some() {
                    // Something arrived meanwhile (or the queue has too many waiters): read
                    // again after a short pause so a waiter flood cannot spin.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                tokio::select! {
                    _ = rx => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    () = cancel.cancelled() => {}
                }
            }
        }
        Request::Route(r) => {
            let c = engine
                .topic(&r.topic)
                .ok_or_else(|| WireError::new(ErrorCode::UnknownTopic, format!("topic {} does not exist", r.topic)))?;
            Ok(Response::Route(RouteResponse { topic: r.topic, queues: c.queues, broker_name: engine.broker_name().to_owned() }))
        }
        Request::OffsetCommit(c) => {
            engine.commit_offset(&c.group, &c.topic, c.queue_id, c.offset).map_err(|e| wire::engine_error(&e))?;
            Ok(Response::Empty)
        }
        Request::OffsetQuery(q) => {
            Ok(Response::OffsetQuery(OffsetQueryResponse { offset: engine.query_offset(&q.group, &q.topic, q.queue_id) }))
        }
        Request::Heartbeat(h) => {
            for g in &h.producer_groups {
                if shared.producers.register(conn.id, g, conn.tx) {
                    engine.producer_joined(g);
                }
            }
            engine.heartbeat(&h.client_id, h.producer_groups, h.consumer_groups).map_err(|e| wire::engine_error(&e))?;
            Ok(Response::Empty)
        }
        Request::GroupHeartbeat(h) => {
            let mode = match h.mode {
                wasmq_protocol::GroupMode::Clustering => wasmq_engine::GroupMode::Clustering,
                wasmq_protocol::GroupMode::Broadcasting => wasmq_engine::GroupMode::Broadcasting,
            };
            let a = engine.group_heartbeat(&h.group, &h.client_id, mode, h.subscriptions).map_err(|e| wire::engine_error(&e))?;
            Ok(Response::GroupHeartbeat(wasmq_protocol::GroupHeartbeatResponse { generation: a.generation, queues: a.queues }))
        }
        Request::GroupLeave(l) => {
            engine.group_leave(&l.group, &l.client_id);
            Ok(Response::Empty)
        }
        Request::SendBack(b) => {
            let max = (b.max_reconsume_times > 0).then_some(b.max_reconsume_times);
            engine.send_back(&b.group, &b.topic, b.queue_id, b.log_offset, b.dead_letter, max).map_err(|e| wire::engine_error(&e))?;
            Ok(Response::Empty)
        }
        Request::LockQueue(l) => {
            if l.unlock {
                engine.unlock_queue(&l.group, &l.client_id, &l.topic, l.queue_id);
                return Ok(Response::LockQueue { granted: false, expires_in_ms: 0 });
            }
            let (granted, expires_in_ms) =
                engine.lock_queue(&l.group, &l.client_id, &l.topic, l.queue_id).map_err(|e| wire::engine_error(&e))?;
            Ok(Response::LockQueue { granted, expires_in_ms })
        }
        Request::EndTransaction(t) => {
            let decision = match t.decision {
                TxDecision::Commit => Decision::Commit,
                TxDecision::Rollback => Decision::Rollback,
                TxDecision::Unknown => Decision::Unknown,
            };
            let log_offset = t.log_offset;
            // As a send: a read and an append in memory, no waiting (durability is waited for below).
            let outcome = engine.end_transaction(log_offset, &t.unique_id, decision).map_err(|e| wire::engine_error(&e))?;
            let state = |d: Decided| match d {
                Decided::Committed => TxState::Committed,
                Decided::RolledBack => TxState::RolledBack,
                Decided::Discarded => TxState::Discarded,
            };
            let resp = match outcome {
                EndOutcome::Applied { decided, end_offset } => {
                    // The decision is on the master (and fsynced under sync flush); a slave that
                    // lags gets it with the rest of the log.
                    let _ = durable(engine, &shared.replication, end_offset, || format!("transaction at log offset {log_offset} ended"))
                        .await?;
                    EndTransactionResponse { state: state(decided), applied: true }
                }
                EndOutcome::StillPending => EndTransactionResponse { state: TxState::Pending, applied: false },
                EndOutcome::AlreadyDecided(d) => {
                    tracing::debug!(log_offset, from_check = t.from_check, "end of an already ended transaction: nothing changed");
                    EndTransactionResponse { state: state(d), applied: false }
                }
            };
            Ok(Response::EndTransaction(resp))
        }
        Request::ReplicaFetch(f) => shared.replication.fetch(engine, f, cancel).await,
        Request::ReplicaMeta(m) => shared.replication.meta(engine, &m),
        Request::RegisterBroker(_) | Request::GetRoute(_) | Request::GetCluster => {
            Err(WireError::new(ErrorCode::InvalidRequest, "this is a broker; routes and registrations go to a name server"))
        }
        Request::CheckTransaction(_) => Err(WireError::new(ErrorCode::InvalidRequest, "CheckTransaction is sent by the broker, not to it")),
        Request::GroupCommit(c) => {
            engine
                .group_commit(&c.group, &c.client_id, c.generation, &c.topic, c.queue_id, c.offset)
                .map_err(|e| wire::group_commit_error(&e))?;
            Ok(Response::Empty)
        }
    }
}

/// A long poll's wake-up: a oneshot to the waiting request task.
struct Waker(oneshot::Sender<()>);

impl Wake for Waker {
    fn wake(self: Box<Self>) {
        let _ = self.0.send(());
    }

    fn is_cancelled(&self) -> bool {
        self.0.is_closed()
    }
}
