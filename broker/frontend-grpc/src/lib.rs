//! The RocketMQ 5 front end: `apache.rocketmq.v2.MessagingService` over gRPC (HTTP/2 on TLS,
//! ALPN `h2`), so that RocketMQ 5 applications in any language use wasmq unchanged. Each RPC is
//! decoded into the service's terms and answered by the [`wasmq_service::Service`]
//! (`messaging.rs`); the one mapping between the service and the API is `wire.rs`; the clients
//! the broker knows, and the way back to them for transaction check-backs, are `clients.rs`.
//! The API is generated from the vendored `.proto` files (`third_party/rocketmq-apis`).

mod clients;
mod messaging;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use wasmq_net::TlsStream;

pub use clients::{ClientInfo, Clients, PRODUCER_GROUP_PREFIX, producer_group};
pub use messaging::{INVISIBLE_DEFAULT, INVISIBLE_MAX, INVISIBLE_MIN, LONG_POLLING_MAX, Messaging, PROTOCOL, Shared, transaction_id};

/// The generated RocketMQ 5 API (`apache.rocketmq.v2`).
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("apache.rocketmq.v2");
}

/// The ALPN protocol name gRPC runs on.
pub const ALPN: &[u8] = b"h2";

/// Serves one accepted TLS connection: HTTP/2 with the messaging service, until the client
/// closes it or the broker shuts down (then gracefully: requests under way finish).
pub async fn serve(tls: TlsStream, peer: SocketAddr, messaging: Messaging, shutdown: CancellationToken) {
    let metrics = Arc::clone(messaging.0.service.metrics());
    let connections = metrics.connections.get_or_create(&wasmq_service::metrics::ProtocolLabels { protocol: PROTOCOL }).clone();
    connections.inc();
    let service = TowerToHyperService::new(pb::messaging_service_server::MessagingServiceServer::new(messaging));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "gRPC connection ended with an error");
    }
    connections.dec();
}
