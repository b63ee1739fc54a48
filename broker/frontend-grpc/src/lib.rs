//! The RocketMQ 5 front end: `apache.rocketmq.v2.MessagingService` over gRPC (HTTP/2 on TLS,
//! ALPN `h2`), so that RocketMQ 5 applications in any language use wasmq unchanged. Each RPC is
//! decoded into the service's terms and answered by the [`wasmq_service::Service`]
//! (`messaging.rs`); the one mapping between the service and the API is `wire.rs`; the clients
//! the broker knows, and the way back to them for transaction check-backs, are `clients.rs`.
//! The API is generated from the vendored `.proto` files by `wasmq-rocketmq-api`.

mod auth;
pub mod authz;
mod clients;
mod messaging;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use wasmq_net::TlsStream;

pub use clients::{CLIENTS_MAX, ClientInfo, Clients, PRODUCER_GROUP_PREFIX, producer_group};
pub use messaging::{
    INVISIBLE_DEFAULT, INVISIBLE_MAX, INVISIBLE_MIN, LONG_POLLING_MAX, Messaging, PROTOCOL, ROUTE_LOOKUP_TIMEOUT, Shared, transaction_id,
};

/// The generated RocketMQ 5 API (`apache.rocketmq.v2`).
pub use wasmq_rocketmq_api::pb;

/// The ALPN protocol name gRPC runs on.
pub const ALPN: &[u8] = b"h2";

/// HTTP/2 flow-control windows the broker grants each connection and each stream: room for
/// hundreds of requests in flight on one connection, as a RocketMQ client keeps.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Requests one connection may have in flight at once (hyper's default is 200).
pub const STREAMS_MAX: u32 = 1024;

/// Bytes a request may carry beyond its bodies' limit (properties, keys, the envelope).
const REQUEST_OVERHEAD_MAX: usize = 1 << 20;

/// What an HTTP/1 request to the gRPC port is told (with status 505).
pub const HTTP1_REFUSAL: &str = "this is wasmq's RocketMQ 5 gRPC port: it speaks gRPC over HTTP/2 (TLS, ALPN h2) only; the admin API and console are on the admin port\n";

/// Serves one accepted TLS connection: HTTP/2 with the messaging service, until the client
/// closes it or the broker shuts down (then gracefully: requests under way finish). An HTTP/1
/// request is answered 505 with [`HTTP1_REFUSAL`]; bytes that are neither end the connection.
pub async fn serve(tls: TlsStream, peer: SocketAddr, messaging: Messaging, shutdown: CancellationToken) {
    let metrics = Arc::clone(messaging.0.service.metrics());
    let connections = metrics.connections.get_or_create(&wasmq_service::metrics::ProtocolLabels { protocol: PROTOCOL }).clone();
    connections.inc();
    // Room for a message at the broker's limit and its properties: a larger one is refused by
    // the store with MESSAGE_BODY_TOO_LARGE rather than by the decoder.
    let decode_max = messaging.0.max_body_size as usize + REQUEST_OVERHEAD_MAX;
    let security = Arc::clone(messaging.0.service.security());
    let service = Arc::clone(&messaging.0.service);
    let grpc = pb::messaging_service_server::MessagingServiceServer::new(messaging).max_decoding_message_size(decode_max);
    let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut grpc = grpc.clone();
        let (security, service) = (Arc::clone(&security), Arc::clone(&service));
        async move {
            if req.version() == http::Version::HTTP_2 {
                let mut req = req;
                match auth::identify(&security, req.headers(), peer.ip()) {
                    // The handlers find who asked in the request's extensions (`authz.rs`).
                    Ok(who) => req.extensions_mut().insert(wasmq_service::Asker::new(who, Some(peer.ip()), PROTOCOL)),
                    Err(why) => {
                        tracing::warn!(%peer, path = %req.uri().path(), why, "gRPC request refused");
                        let asker = wasmq_service::Asker::new(wasmq_service::Identity::Anonymous, Some(peer.ip()), PROTOCOL);
                        service.record(&asker, "login", req.uri().path(), &format!("denied: {why}"));
                        return Ok(tonic::Status::unauthenticated(why).into_http());
                    }
                };
                return tower::Service::call(&mut grpc, req).await;
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from_static(HTTP1_REFUSAL.as_bytes())));
            let mut refusal = http::Response::new(body);
            *refusal.status_mut() = http::StatusCode::HTTP_VERSION_NOT_SUPPORTED;
            refusal.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
            Ok(refusal)
        }
    });
    let executor = wasmq_rocketmq_api::local::ConnectionExecutor::default();
    let mut builder = hyper_util::server::conn::auto::Builder::new(executor.clone());
    // HTTP/2's default windows (64 KiB) hold back a client with many sends in flight and make
    // the broker write a WINDOW_UPDATE every few messages.
    builder
        .http2()
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_concurrent_streams(STREAMS_MAX);
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let mut streams = wasmq_rocketmq_api::local::Streams::new();
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| executor.poll(cx, &mut streams, conn.as_mut())) => break r,
            () = shutdown.cancelled(), if !stopping => {
                // Requests under way finish (their streams are still driven), then it closes.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "gRPC connection ended with an error");
    }
    connections.dec();
}
