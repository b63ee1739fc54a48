//! One TLS connection to a broker, shared by many concurrent requests (request ids).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use wasmq_protocol::{
    ErrorCode, FRAME_BYTES_MAX, Frame, FrameDecoder, HelloRequest, HelloResponse, Kind, Op, OutFrame, PROTOCOL_VERSION, Request, Response,
};

use crate::ClientError;
use crate::io::{read_ahead, write_parts};

/// Requests queued for the writer task.
const OUTBOUND_FRAMES_MAX: usize = 1024;

/// How to reach a broker.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// `host:port` of the broker's protocol listener.
    pub addr: String,
    /// PEM file of the CA that signed the broker's certificate.
    pub ca: PathBuf,
    pub client_id: String,
    /// Longest a request (other than a long poll's own wait) may take.
    pub request_timeout: Duration,
    /// The user to log in as in Hello (again on every reconnection); none: anonymous.
    pub credentials: Option<wasmq_protocol::Credentials>,
}

impl ConnectionOptions {
    pub fn new(addr: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        Self {
            addr: addr.into(),
            ca: ca.into(),
            client_id: default_client_id(),
            request_timeout: Duration::from_secs(10),
            credentials: None,
        }
    }

    /// Logs in as `user` with `password`.
    #[must_use]
    pub fn login(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(wasmq_protocol::Credentials { user: user.into(), password: password.into() });
        self
    }
}

fn default_client_id() -> String {
    format!("{}@{}", std::process::id(), crate::random_hex(4))
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Frame>>>>;
/// Where requests the broker sends (transaction checks) go.
type Inbound = Arc<Mutex<Option<mpsc::Sender<Request>>>>;
/// Broker requests queued for the application; past it they are dropped (the broker asks
/// again later).
const INBOUND_MAX: usize = 1024;
/// Waits between reconnection attempts: doubled after each failure from the first to the
/// last, each with up to a fifth of jitter either way; none before the first attempt. The last
/// bounds how long a client stays away from a broker that is back (a restart, a failover), as
/// Kafka's `reconnect.backoff.max.ms` (1 s) does.
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Registrations a connection repeats after reconnecting (one per producer group it serves).
pub const REPLAY_MAX: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection. Cheap to clone; every clone shares the socket. When the socket is lost (the
/// broker restarted, the network failed) the next request opens a new one — after a backoff
/// with jitter when attempts keep failing — says so in the log, and sends again what was
/// registered with [`Connection::on_reconnect`]; requests in flight on the lost socket fail
/// with [`ClientError::Closed`] (callers with retries send them again).
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: ConnectionOptions,
    tls: Arc<rustls::ClientConfig>,
    /// The socket requests go to now.
    link: Mutex<Arc<Link>>,
    /// Held by the caller that reconnects, with the backoff state.
    reconnecting: tokio::sync::Mutex<Backoff>,
    next_id: AtomicU32,
    hello: Mutex<HelloResponse>,
    inbound: Inbound,
    /// Requests sent again on every new socket (registrations the broker keeps per socket).
    replay: Mutex<Vec<Request>>,
    /// Keeps this client within the broker's in-flight limit (it waits instead of being
    /// refused with TooManyInFlight).
    in_flight: tokio::sync::Semaphore,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<tokio::time::Instant>,
}

impl Backoff {
    fn failed(&mut self) {
        let base = RECONNECT_BACKOFF_FIRST.saturating_mul(1 << self.failures.min(16)).min(RECONNECT_BACKOFF_MAX);
        let jitter = rand::Rng::random_range(&mut rand::rng(), 0.8..1.2);
        self.failures += 1;
        self.not_before = Some(tokio::time::Instant::now() + base.mul_f64(jitter));
    }
}

/// One socket: its writer and reader tasks, and the requests waiting for answers on it.
#[derive(Debug)]
struct Link {
    tx: mpsc::Sender<OutFrame>,
    pending: Pending,
    closed: Arc<Mutex<Option<String>>>,
}

impl Link {
    /// Connects and completes TLS (the version handshake is the caller's first request).
    async fn open(options: &ConnectionOptions, tls: &Arc<rustls::ClientConfig>, inbound: &Inbound) -> Result<Self, ClientError> {
        let name = crate::tls::server_name(&options.addr)?;
        let connect_err = |reason: String| ClientError::Connect { addr: options.addr.clone(), reason };
        let tcp = tokio::time::timeout(options.request_timeout, TcpStream::connect(&options.addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, read_ahead(tcp))
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let (tx, mut rx) = mpsc::channel::<OutFrame>(OUTBOUND_FRAMES_MAX);
        let pending: Pending = Arc::default();
        let closed: Arc<Mutex<Option<String>>> = Arc::default();

        let closed_w = Arc::clone(&closed);
        tokio::spawn(async move {
            let (mut scratch, mut parts) = (BytesMut::new(), Vec::new());
            while let Some(f) = rx.recv().await {
                wasmq_protocol::gather_batch(f, std::iter::from_fn(|| rx.try_recv().ok()), &mut scratch, &mut parts);
                if let Err(e) = write_parts(&mut wr, &mut parts).await {
                    lock(&closed_w).get_or_insert(e.to_string());
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });

        let (pending_r, closed_r, inbound_r) = (Arc::clone(&pending), Arc::clone(&closed), Arc::clone(inbound));
        tokio::spawn(async move {
            let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
            let mut buf = BytesMut::with_capacity(64 << 10);
            let reason = 'read: loop {
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(f)) if f.kind == Kind::Request => {
                            let req = Op::from_u16(f.code).and_then(|op| Request::decode(op, f.body).ok());
                            let to = lock(&inbound_r).clone();
                            if let (Some(req), Some(to)) = (req, to) {
                                let _ = to.try_send(req);
                            }
                        }
                        Ok(Some(f)) => {
                            let waiter = lock(&pending_r).remove(&f.request_id);
                            match waiter {
                                Some(w) => {
                                    let _ = w.send(f);
                                }
                                None if f.request_id == 0 && f.code != 0 => {
                                    break 'read format!("broker closed the connection: {}", String::from_utf8_lossy(&f.body));
                                }
                                None => {}
                            }
                        }
                        Ok(None) => break,
                        Err(e) => break 'read format!("bad frame from broker: {e}"),
                    }
                }
                buf.reserve(64 << 10);
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "broker closed the connection".to_owned(),
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                }
            };
            lock(&closed_r).get_or_insert(reason);
            // Fail everything still waiting: dropping the senders wakes the requesters.
            lock(&pending_r).clear();
        });
        Ok(Self { tx, pending, closed })
    }

    fn closed(&self) -> Option<String> {
        lock(&self.closed).clone()
    }

    async fn call(&self, id: u32, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let op = req.op();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let frame = OutFrame { kind: Kind::Request, request_id: id, code: op as u16, parts: req.encode_parts() };
        if self.tx.send(frame).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(ClientError::Closed(self.closed().unwrap_or_else(|| "writer stopped".into())));
        }
        let frame = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => return Err(ClientError::Closed(self.closed().unwrap_or_else(|| "connection lost".into()))),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(ClientError::Timeout(timeout));
            }
        };
        decode_answer(op, frame)
    }
}

impl Connection {
    /// Connects, completes TLS and the version handshake.
    ///
    /// # Errors
    /// Unreachable broker, TLS failure, no common protocol version.
    pub async fn connect(options: ConnectionOptions) -> Result<Self, ClientError> {
        let tls = crate::tls::client_config(&options.ca, b"wasmq/1")?;
        let inbound: Inbound = Arc::default();
        let link = Arc::new(Link::open(&options, &tls, &inbound).await?);
        let placeholder =
            HelloResponse { version: 0, broker_name: String::new(), frame_bytes_max: 0, in_flight_max: 0, message_bytes_max: 0 };
        let mut conn = Self {
            inner: Arc::new(Inner {
                options,
                tls,
                link: Mutex::new(Arc::clone(&link)),
                reconnecting: tokio::sync::Mutex::default(),
                next_id: AtomicU32::new(1),
                hello: Mutex::new(placeholder),
                inbound,
                replay: Mutex::default(),
                in_flight: tokio::sync::Semaphore::new(1),
            }),
        };
        let hello = conn.hello_on(&link).await?;
        let inner = Arc::get_mut(&mut conn.inner).expect("not shared yet");
        inner.in_flight = tokio::sync::Semaphore::new(hello.in_flight_max.max(1) as usize);
        *lock(&inner.hello) = hello;
        Ok(conn)
    }

    async fn hello_on(&self, link: &Link) -> Result<HelloResponse, ClientError> {
        let req = Request::Hello(HelloRequest {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            client_id: self.inner.options.client_id.clone(),
            credentials: self.inner.options.credentials.clone(),
        });
        match link.call(self.next_id(), &req, self.inner.options.request_timeout).await? {
            Response::Hello(h) => Ok(h),
            _ => Err(ClientError::Malformed("Hello answered with another response".into())),
        }
    }

    /// The socket to use: the current one, or a new one if it was lost.
    async fn link(&self) -> Result<Arc<Link>, ClientError> {
        let current = Arc::clone(&*lock(&self.inner.link));
        if current.closed().is_none() {
            return Ok(current);
        }
        let mut backoff = self.inner.reconnecting.lock().await;
        // Another request may have reconnected while this one waited.
        let current = Arc::clone(&*lock(&self.inner.link));
        let Some(reason) = current.closed() else { return Ok(current) };
        if let Some(at) = backoff.not_before {
            tokio::time::sleep_until(at).await;
        }
        let addr = &self.inner.options.addr;
        tracing::warn!(%addr, %reason, attempt = backoff.failures + 1, "connection to the broker lost; reconnecting");
        let opened = async {
            let link = Arc::new(Link::open(&self.inner.options, &self.inner.tls, &self.inner.inbound).await?);
            let hello = self.hello_on(&link).await?;
            Ok::<_, ClientError>((link, hello))
        };
        match opened.await {
            Ok((link, hello)) => {
                let replay: Vec<Request> = lock(&self.inner.replay).clone();
                for req in &replay {
                    if let Err(e) = link.call(self.next_id(), req, self.inner.options.request_timeout).await {
                        tracing::warn!(%addr, error = %e, op = ?req.op(), "repeating a registration after reconnecting failed");
                    }
                }
                tracing::info!(%addr, broker = %hello.broker_name, attempts = backoff.failures + 1, "reconnected to the broker");
                *lock(&self.inner.hello) = hello;
                *lock(&self.inner.link) = Arc::clone(&link);
                *backoff = Backoff::default();
                Ok(link)
            }
            Err(e) => {
                backoff.failed();
                tracing::warn!(%addr, error = %e, "reconnecting failed; trying again on the next request");
                Err(e)
            }
        }
    }

    /// What the broker said in the handshake (name, limits), on the current socket.
    pub fn hello(&self) -> HelloResponse {
        lock(&self.inner.hello).clone()
    }

    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    /// Requests the broker sends on this connection (transaction checks), from now on; a later
    /// call takes them over. They keep coming after a reconnection.
    pub fn broker_requests(&self) -> mpsc::Receiver<Request> {
        let (tx, rx) = mpsc::channel(INBOUND_MAX);
        *lock(&self.inner.inbound) = Some(tx);
        rx
    }

    /// Sends `req` again on every new socket after a reconnection (before anything else): a
    /// registration the broker keeps per socket, such as a producer group's heartbeat.
    /// The same request registered twice is kept once; past [`REPLAY_MAX`] registrations more
    /// are refused (logged): each is sent before anything else on every new socket.
    pub fn on_reconnect(&self, req: Request) {
        let mut replay = lock(&self.inner.replay);
        if replay.contains(&req) {
            return;
        }
        if replay.len() >= REPLAY_MAX {
            tracing::warn!(addr = %self.inner.options.addr, op = ?req.op(), "more than {REPLAY_MAX} registrations to repeat after a reconnection; this one is not kept");
            return;
        }
        replay.push(req);
    }

    /// Why the current socket is closed, if it is (the next request opens a new one).
    pub fn closed(&self) -> Option<String> {
        lock(&self.inner.link).closed()
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Sends a request and waits for its answer (`timeout` on top of any long-poll wait),
    /// reconnecting first if the socket was lost.
    ///
    /// # Errors
    /// The broker's error answer, a lost connection (reconnecting failed, or it was lost while
    /// the request was in flight), a timeout, a malformed answer.
    pub async fn call_with_timeout(&self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let _permit = self.inner.in_flight.acquire().await.map_err(|_| ClientError::Closed("connection dropped".into()))?;
        let link = self.link().await?;
        link.call(self.next_id(), req, timeout).await
    }

    /// [`Connection::call_with_timeout`] with the connection's request timeout.
    ///
    /// # Errors
    /// As [`Connection::call_with_timeout`].
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        self.call_with_timeout(req, self.inner.options.request_timeout).await
    }

    /// Sends a request the broker will not answer (request id 0).
    ///
    /// # Errors
    /// A lost connection that could not be opened again.
    pub async fn send_one_way(&self, req: Request) -> Result<(), ClientError> {
        let link = self.link().await?;
        let frame = OutFrame { kind: Kind::Request, request_id: 0, code: req.op() as u16, parts: req.encode_parts() };
        link.tx.send(frame).await.map_err(|_| ClientError::Closed(link.closed().unwrap_or_else(|| "writer stopped".into())))
    }
}

fn decode_answer(op: Op, f: Frame) -> Result<Response, ClientError> {
    if f.code == 0 {
        return Response::decode(op, f.body).map_err(|e| ClientError::Malformed(e.to_string()));
    }
    let message = String::from_utf8_lossy(&f.body).into_owned();
    match ErrorCode::from_u16(f.code) {
        Some(code) => Err(ClientError::Broker { code, message }),
        None => Err(ClientError::UnknownStatus(f.code)),
    }
}
