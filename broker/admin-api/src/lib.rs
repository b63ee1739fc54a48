//! The admin HTTP API (JSON under `/api/v1`, a bearer token; `admin.rs`), its data endpoints
//! and Prometheus metrics (`admin_data.rs`), the OpenAPI document (`openapi.rs`), the console's
//! files (`console.rs`) and the figures behind the console's charts (`stats.rs`), served over
//! HTTPS by [`serve`].
//!
//! Calls the service for writes (a test send goes the way a producer's does) and reads the
//! engine's state; no protocol front end's types.

mod admin;
mod admin_data;
mod authz;
mod console;
mod controller;
mod openapi;
pub mod stats;
mod users;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::{AdminState, router};

/// The ALPN protocol of the admin listener.
pub const ALPN: &[u8] = b"http/1.1";
/// Admin connections open at once (the console keeps a few; scripts a few more).
pub const ADMIN_CONNECTIONS_MAX: usize = 256;
/// Time an admin client has to send its request headers.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection's requests may take to finish at shutdown.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether the console's files are built into this broker.
#[must_use]
pub fn console_built() -> bool {
    console::built()
}

/// Serves the admin API on `listener` until `shutdown` (connections on `tracker`).
pub async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let stop = shutdown.clone();
    wasmq_net::serve_tls("admin", listener, acceptor, ADMIN_CONNECTIONS_MAX, shutdown, tracker, move |tls, peer| {
        let (router, shutdown) = (router.clone(), stop.clone());
        async move {
            // Logins are rate limited per address too.
            let router = tower::ServiceExt::map_request(router, move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(users::Peer(peer));
                req
            });
            let service = hyper_util::service::TowerToHyperService::new(router);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(ADMIN_DRAIN_TIMEOUT, conn).await;
                }
            }
        }
    })
    .await;
}
