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
}

impl ConnectionOptions {
    pub fn new(addr: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        Self { addr: addr.into(), ca: ca.into(), client_id: default_client_id(), request_timeout: Duration::from_secs(10) }
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

/// A connection. Cheap to clone; every clone shares the socket.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<OutFrame>,
    pending: Pending,
    next_id: AtomicU32,
    hello: HelloResponse,
    options: ConnectionOptions,
    closed: Arc<Mutex<Option<String>>>,
    inbound: Inbound,
    /// Keeps this client within the broker's in-flight limit (it waits instead of being
    /// refused with TooManyInFlight).
    in_flight: tokio::sync::Semaphore,
}

impl Connection {
    /// Connects, completes TLS and the version handshake.
    ///
    /// # Errors
    /// Unreachable broker, TLS failure, no common protocol version.
    pub async fn connect(options: ConnectionOptions) -> Result<Self, ClientError> {
        let config = crate::tls::client_config(&options.ca, b"wasmq/1")?;
        let name = crate::tls::server_name(&options.addr)?;
        let connect_err = |reason: String| ClientError::Connect { addr: options.addr.clone(), reason };
        let tcp = tokio::time::timeout(options.request_timeout, TcpStream::connect(&options.addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| connect_err(e.to_string()))?;
        let tls =
            tokio_rustls::TlsConnector::from(config).connect(name, read_ahead(tcp)).await.map_err(|e| connect_err(format!("TLS: {e}")))?;
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
                    closed_w.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e.to_string());
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });

        let inbound: Inbound = Arc::default();
        let (pending_r, closed_r, inbound_r) = (Arc::clone(&pending), Arc::clone(&closed), Arc::clone(&inbound));
        tokio::spawn(async move {
            let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
            let mut buf = BytesMut::with_capacity(64 << 10);
            let reason = 'read: loop {
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(f)) if f.kind == Kind::Request => {
                            let req = Op::from_u16(f.code).and_then(|op| Request::decode(op, f.body).ok());
                            let to = inbound_r.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            if let (Some(req), Some(to)) = (req, to) {
                                let _ = to.try_send(req);
                            }
                        }
                        Ok(Some(f)) => {
                            let waiter = pending_r.lock().unwrap_or_else(|p| p.into_inner()).remove(&f.request_id);
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
            closed_r.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(reason);
            // Fail everything still waiting: dropping the senders wakes the requesters.
            pending_r.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });

        let hello_req = Request::Hello(HelloRequest {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            client_id: options.client_id.clone(),
        });
        let placeholder =
            HelloResponse { version: 0, broker_name: String::new(), frame_bytes_max: 0, in_flight_max: 0, message_bytes_max: 0 };
        let mut conn = Self {
            inner: Arc::new(Inner {
                tx,
                pending,
                next_id: AtomicU32::new(1),
                hello: placeholder,
                options,
                closed,
                inbound,
                in_flight: tokio::sync::Semaphore::new(1),
            }),
        };
        let Response::Hello(hello) = conn.call(&hello_req).await? else {
            return Err(ClientError::Malformed("Hello answered with another response".into()));
        };
        let inner = Arc::get_mut(&mut conn.inner).expect("not shared yet");
        inner.in_flight = tokio::sync::Semaphore::new(hello.in_flight_max.max(1) as usize);
        inner.hello = hello;
        Ok(conn)
    }

    /// What the broker said in the handshake (name, limits).
    pub fn hello(&self) -> &HelloResponse {
        &self.inner.hello
    }

    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    /// Requests the broker sends on this connection (transaction checks), from now on; a later
    /// call takes them over.
    pub fn broker_requests(&self) -> mpsc::Receiver<Request> {
        let (tx, rx) = mpsc::channel(INBOUND_MAX);
        *self.inner.inbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        self.inner.closed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Sends a request and waits for its answer (`timeout` on top of any long-poll wait).
    ///
    /// # Errors
    /// The broker's error answer, a closed connection, a timeout, a malformed answer.
    pub async fn call_with_timeout(&self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let _permit = self.inner.in_flight.acquire().await.map_err(|_| ClientError::Closed("connection dropped".into()))?;
        let op = req.op();
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let frame = OutFrame { kind: Kind::Request, request_id: id, code: op as u16, parts: req.encode_parts() };
        if self.inner.tx.send(frame).await.is_err() {
            self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(ClientError::Closed(self.closed().unwrap_or_else(|| "writer stopped".into())));
        }
        let frame = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => return Err(ClientError::Closed(self.closed().unwrap_or_else(|| "connection lost".into()))),
            Err(_) => {
                self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return Err(ClientError::Timeout(timeout));
            }
        };
        decode_answer(op, frame)
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
    /// A closed connection.
    pub async fn send_one_way(&self, req: Request) -> Result<(), ClientError> {
        let frame = OutFrame { kind: Kind::Request, request_id: 0, code: req.op() as u16, parts: req.encode_parts() };
        self.inner.tx.send(frame).await.map_err(|_| ClientError::Closed(self.closed().unwrap_or_else(|| "writer stopped".into())))
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
